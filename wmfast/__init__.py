"""wmfast: fast training, rollout and export for small latent-action video world models."""
from wmfast.errors import WmfastError  # noqa: F401
from wmfast.loader import load  # noqa: F401
from wmfast.models import WorldModel  # noqa: F401
from wmfast.rollout.world import World  # noqa: F401

from wmfast.version import __version__  # noqa: F401,E402
