"""The models (two kinds of LAM) and the WorldModel bundle that `wmfast.load` (wmfast.loader) returns."""
from wmfast.errors import WmfastError
from wmfast.models.dynamics import DynamicsConfig, DynamicsModel  # noqa: F401
from wmfast.models.lam import TransformerLam, TransformerLamConfig  # noqa: F401
from wmfast.models.lam_common import LatentActionModel, VQConfig  # noqa: F401
from wmfast.models.lam_conv import ConvLam, ConvLamConfig  # noqa: F401
from wmfast.models.latent_actions import LatentActionConfig, lam_config_from_dict  # noqa: F401
from wmfast.models.tokenizer import TokenizerConfig, VideoTokenizer  # noqa: F401


class WorldModel:
    """A trained world model: tokenizer, latent action model (lam) and dynamics.

    Any stage may be None while a run is being trained stage by stage."""

    def __init__(self, tokenizer=None, lam=None, dynamics=None, path=None):
        self.tokenizer, self.lam, self.dynamics, self.path = tokenizer, lam, dynamics, path
        self.lapa = None   # LAPA latent-action VQ-VAE when the run has a lapa/ folder (see load)
        check_compatible(tokenizer, lam, dynamics)

    def modules(self):
        return [m for m in (self.tokenizer, self.lam, self.dynamics) if m is not None]

    def to(self, device):
        for m in self.modules():
            m.to(device)
        return self

    def require(self, *stages):
        names = {"tokenizer": self.tokenizer, "actions": self.lam, "dynamics": self.dynamics}
        missing = [s for s in stages if names[s] is None]
        if missing:
            raise WmfastError(f"{self.path or 'world model'}: missing stage(s) {missing}; "
                              f"train them with `wmfast train {missing[0]}`")
        return self

    @property
    def frame_size(self) -> int:
        return self.modules()[0].config.frame_size


def check_compatible(tokenizer, lam, dynamics):
    """Config mismatches between stages fail loudly, naming the field."""
    if dynamics is None:
        return
    if tokenizer is not None:
        t, d = tokenizer.config, dynamics.config
        for field, want in (("frame_size", t.frame_size), ("patch_size", t.patch_size),
                            ("latent_dim", t.latent_dim), ("codebook_size", t.num_codes)):
            if getattr(d, field) != want:
                raise WmfastError(f"config mismatch: dynamics {field}={getattr(d, field)} but tokenizer has {want}")
    if lam is not None and dynamics.config.conditioning_dim != lam.config.action_dim:
        raise WmfastError(f"config mismatch: dynamics conditioning_dim={dynamics.config.conditioning_dim} "
                          f"but the latent action model has action_dim={lam.config.action_dim}")
