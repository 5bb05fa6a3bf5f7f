"""wmfast: fast training, rollout and export for small latent-action video world models."""
from wmfast.errors import WmfastError  # noqa: F401
from wmfast.loader import load  # noqa: F401
from wmfast.models import WorldModel  # noqa: F401
from wmfast.rollout.world import World  # noqa: F401

__version__ = "0.1.0"
