"""Rollouts: the reference loop (ground truth) and, beside it, the fast World engine."""
from wmfast.rollout.reference import reference_rollout, reference_step  # noqa: F401
from wmfast.rollout.world import World  # noqa: F401
