"""The LAM's old single config, kept so that old runs and old code load.

Until the split into wmfast.models.lam (TransformerLamConfig, tinyworlds' LAM) and
wmfast.models.lam_conv (ConvLamConfig), one LatentActionConfig held both models' fields and
`architecture` chose between them. `lam_config_from_dict` reads such a config.json (and the new
ones, which name their class by the same `architecture` tag) into the right config class;
`LatentActionConfig(**old fields)` does the same for keyword arguments, and
`LatentActionModel(cfg)` builds the LAM of any LAM config.

Old fields map as follows: vq_* move into the nested VQConfig; fields the chosen model never read
(the transformer's shape for the conv LAM, the conv settings for the transformer) are dropped;
REMOVED options load silently at their default and fail, by name, with any other value.
"""
import dataclasses
from dataclasses import dataclass

from wmfast.config import SpaceTimeConfig
from wmfast.errors import WmfastError
from wmfast.models.lam import TransformerLam, TransformerLamConfig, WindowedActionHead  # noqa: F401
from wmfast.models.lam_common import VQ_FIELDS, LatentActionModel, OneHotCodes, VQConfig  # noqa: F401
from wmfast.models.lam_conv import ConvLam, ConvLamConfig  # noqa: F401

LAM_CONFIGS = {c.ARCHITECTURE: c for c in (TransformerLamConfig, ConvLamConfig)}
# Options no recipe, preset, study or import used (issue 25) -> the default an old config may hold.
REMOVED = {"fsq_levels": 2, "encoder_frame_diff": False, "action_injection": "film", "film_init_scale": 0.0,
           "decoder_sees_past": False, "changed_pixel_weight": 1.0, "action_free_prior": False}
# Per model: old fields it never read, and fields of the old config it no longer has.
NOT_READ = {"transformer": {"conv_channels", "conv_norm", "conv_context", "first_pair_weight", "code_dim"},
            "conv": {f.name for f in dataclasses.fields(SpaceTimeConfig)} - {"frame_size"} |
                    {"variance_target", "variance_weight", "use_windowed_attention"}}
REMOVED_FOR = {"transformer": {"onehot_actions": False}, "conv": {"quantizer": "vq"}}


@dataclass
class LatentActionConfig(SpaceTimeConfig):
    """The old flat config (its fields and defaults, for code that lists or sets them); building
    one returns the TransformerLamConfig or ConvLamConfig its `architecture` names."""
    n_actions: int = 8
    quantizer: str = "fsq"
    action_dim: int = 0
    variance_target: float = 0.01
    variance_weight: float = 100.0
    use_windowed_attention: bool = False
    architecture: str = "transformer"
    fsq_levels: int = 2
    vq_beta: float = 0.25
    vq_ema: bool = False
    vq_dead_code_every: int = 0
    vq_entropy_weight: float = 0.0
    encoder_frame_diff: bool = False
    action_injection: str = "film"
    film_init_scale: float = 0.0
    decoder_sees_past: bool = False
    changed_pixel_weight: float = 1.0
    conv_channels: int = 32
    conv_norm: str = "group"
    onehot_actions: bool = False
    code_dim: int = 0
    conv_context: int = 1
    first_pair_weight: float = 0.0
    action_free_prior: bool = False

    @classmethod
    def settable(cls) -> dict:
        """The old flat fields and every LAM config's own (a new option of one LAM is settable
        without a field here); the nested `vq` is set through the flat vq_* names."""
        keys = {}
        for config_cls in LAM_CONFIGS.values():
            keys.update(config_cls.settable())
        keys.update(super().settable())
        keys.pop("vq", None)
        return keys

    def __new__(cls, **fields):
        config_cls, values = translate(fields, "LatentActionConfig")
        return config_cls(**values)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config"):
        return lam_config_from_dict(d, source)


def lam_config_from_dict(d: dict, source: str = "config"):
    """A LAM's config.json (old flat form or new) -> TransformerLamConfig or ConvLamConfig."""
    config_cls, values = translate(d, source)
    return config_cls.from_dict(values, source)


def translate(d: dict, source: str):
    """Old or new LAM config fields -> (config class, its fields)."""
    if not isinstance(d, dict):
        raise WmfastError(f"{source}: a LAM config must be a JSON object of fields, got {type(d).__name__}")
    arch = d.get("architecture", "transformer")
    if not isinstance(arch, str) or arch not in LAM_CONFIGS:
        raise WmfastError(f"{source}: LatentActionConfig.architecture must be one of {list(LAM_CONFIGS)}, got {arch!r}")
    config_cls = LAM_CONFIGS[arch]
    own = {f.name for f in dataclasses.fields(config_cls)}
    removed = {**REMOVED, **REMOVED_FOR[arch]}
    values, vq = {}, {}
    for key, value in d.items():
        if key in ("kind", "architecture") or key in NOT_READ[arch]:
            continue
        if key in VQ_FIELDS:
            vq[VQ_FIELDS[key]] = value
        elif key in removed:
            if value != removed[key]:
                raise WmfastError(f"{source}: LAM option {key}={value!r} was removed from the {arch} LAM "
                                  f"(only {key}={removed[key]!r} still loads)")
        elif key in own or (arch == "conv" and key == "action_dim"):
            values[key] = value
        else:
            raise WmfastError(f"{source}: unknown {config_cls.__name__} keys {[key]} (known: {sorted(own)})")
    if vq:
        values["vq"] = {**vq, **(values["vq"] if isinstance(values.get("vq"), dict) else {})}
    if arch == "conv":
        conv_code_dim(values, d, source)
    return config_cls, values


def conv_code_dim(values: dict, d: dict, source: str):
    """The conv LAM's code width from old fields: code_dim with one-hot latents, else action_dim
    (which the old config saved; 0 meant 16 in both)."""
    if "action_dim" in values:
        action_dim = values.pop("action_dim")
        n_actions = d.get("n_actions", ConvLamConfig.n_actions)
        if d.get("onehot_actions", False) is True:
            if action_dim not in (0, n_actions):
                raise WmfastError(f"{source}: onehot_actions makes action_dim = n_actions = {n_actions}, "
                                  f"got {action_dim}")
        else:
            values["code_dim"] = action_dim
    if values.get("code_dim") == 0:
        values["code_dim"] = 16
