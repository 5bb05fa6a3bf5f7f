"""Import tinyworlds runs: find the checkpoints, map their configs, load their weights safely.

A tinyworlds run is `results/<run>/<stage>/checkpoints/<stage>_step_<N>/` with stage one of
video_tokenizer, latent_actions, dynamics; each checkpoint folder holds model_state_dict.pt
(tensors only: read with weights_only=True) and state.pt (a pickle that may hold tinyworlds'
own classes: read with the restricted unpickler of wmfast.compat.safe_pickle). The state keys
are already wmfast's, so the import is: config dict -> wmfast config (tinyworlds' defaults for
missing keys), cross-checked against the weights' shapes, then a strict state-dict load.

    m = load_tinyworlds("results/my_run")                 # WorldModel, nothing written
    import_tinyworlds("results/my_run", "runs/my_run")    # a wmfast run: safetensors + config.json
"""
import math
import os
import re
from dataclasses import dataclass

import torch
from tqdm import tqdm

from wmfast.checkpoint import STAGES, load_state_dict_checked, load_torch_safe, save_model
from wmfast.compat.safe_pickle import safe_load
from wmfast.errors import WmfastError
from wmfast.models import DynamicsConfig, TokenizerConfig, TransformerLamConfig, WorldModel

# tinyworlds stage folder -> wmfast stage; the extra names are those tinyworlds' own checkpoint
# search accepts for the latent action model.
STAGE_FOLDERS = {"video_tokenizer": "tokenizer", "latent_actions": "actions", "dynamics": "dynamics"}
STAGE_ALIASES = {**STAGE_FOLDERS, "lam": "actions", "action_tokenizer": "actions",
                 "tokenizer": "tokenizer", "actions": "actions"}
MODEL_FILE, STATE_FILE = "model_state_dict.pt", "state.pt"

# tinyworlds' loaders use these when the saved config lacks a key.
DEFAULTS = {"frame_size": 128, "patch_size": 8, "embed_dim": 128, "num_heads": 8, "hidden_dim": 256,
            "num_blocks": 4, "latent_dim": 6, "num_bins": 4, "n_actions": 8}
COMMON_KEYS = ("frame_size", "patch_size", "embed_dim", "num_heads", "hidden_dim", "num_blocks")
CONFIG_KEYS = {
    "tokenizer": COMMON_KEYS + ("latent_dim", "num_bins"),
    "actions": COMMON_KEYS + ("n_actions",),
    "dynamics": COMMON_KEYS + ("latent_dim", "num_bins"),
}
CHECKPOINT_NAME = re.compile(r"^(?P<stage>.+?)_(?:step|checkpoint)_(?P<step>\d+)(?:_.*)?$")


@dataclass
class Checkpoint:
    stage: str          # wmfast stage: tokenizer / actions / dynamics
    path: str           # a checkpoint folder, or a single-file checkpoint (.pt / .pth, older tinyworlds)
    step: int

    @property
    def name(self) -> str:
        return os.path.basename(self.path.rstrip(os.sep))


# -- finding checkpoints --------------------------------------------------------------------------

def _stage_of(name: str):
    return STAGE_ALIASES.get(name)


def _parse_name(name: str):
    """'video_tokenizer_step_1000' -> ('tokenizer', 1000); anything else -> (None, None)."""
    m = CHECKPOINT_NAME.match(os.path.splitext(name)[0] if name.endswith((".pt", ".pth")) else name)
    if not m:
        return None, None
    stage = m.group("stage")
    return next((s for alias, s in STAGE_ALIASES.items() if stage == alias or stage.endswith("_" + alias)),
                None), int(m.group("step"))


def _is_checkpoint_folder(path) -> bool:
    return os.path.isfile(os.path.join(path, MODEL_FILE))


def _list_checkpoints(folder, stage: str) -> list:
    """Checkpoints in a `checkpoints/` folder (folders, or single .pt/.pth files), oldest step first."""
    found = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        named_stage, step = _parse_name(name)
        if step is None or named_stage not in (None, stage):
            continue
        if (os.path.isdir(path) and _is_checkpoint_folder(path)) or \
                (os.path.isfile(path) and name.endswith((".pt", ".pth"))):
            found.append(Checkpoint(stage, path, step))
    return sorted(found, key=lambda c: (c.step, os.path.isdir(c.path)))


def _stage_checkpoints(stage_dir, stage: str) -> list:
    folder = os.path.join(stage_dir, "checkpoints")
    return _list_checkpoints(folder if os.path.isdir(folder) else stage_dir, stage)


def _run_stages(run_dir) -> dict:
    """wmfast stage -> checkpoints found in a run folder's stage folders."""
    found = {}
    for name in sorted(os.listdir(run_dir)):
        stage, path = _stage_of(name), os.path.join(run_dir, name)
        if stage and os.path.isdir(path) and stage not in found:
            ckpts = _stage_checkpoints(path, stage)
            if ckpts:
                found[stage] = ckpts
    return {s: found[s] for s in STAGES if s in found}


def _candidate_runs(folder) -> list:
    return [os.path.join(folder, n) for n in sorted(os.listdir(folder))
            if os.path.isdir(os.path.join(folder, n)) and _run_stages(os.path.join(folder, n))]


def discover(path) -> dict:
    """Any tinyworlds path -> {wmfast stage: [Checkpoint, ...] oldest first}.

    Accepts a run folder (results/<run>), its parent results/ (or the folder holding results/)
    when it holds one run, a stage folder, its checkpoints/ folder, one checkpoint folder, a file
    inside one, or a single-file checkpoint."""
    path = os.path.normpath(os.fspath(path))
    if not os.path.exists(path):
        raise WmfastError(f"no such tinyworlds run: {path}")
    if os.path.isfile(path) and os.path.basename(path) in (MODEL_FILE, STATE_FILE, "optim_state_dict.pt"):
        return discover(os.path.dirname(path))
    if os.path.isfile(path) or _is_checkpoint_folder(path):
        stage = _single_stage(path)
        return {stage: [Checkpoint(stage, path, _parse_name(os.path.basename(path))[1] or 0)]}
    name = os.path.basename(path)
    if name == "checkpoints" and _stage_of(os.path.basename(os.path.dirname(path))):
        stage = _stage_of(os.path.basename(os.path.dirname(path)))
        return _nonempty({stage: _list_checkpoints(path, stage)}, path)
    if _stage_of(name) and os.path.isdir(os.path.join(path, "checkpoints")):
        return _nonempty({_stage_of(name): _stage_checkpoints(path, _stage_of(name))}, path)
    found = _run_stages(path)
    if found:
        return found
    for folder in (os.path.join(path, "results"), path):
        if os.path.isdir(folder):
            runs = _candidate_runs(folder)
            if len(runs) == 1:
                return _run_stages(runs[0])
            if len(runs) > 1:
                names = ", ".join(os.path.basename(r) for r in runs)
                raise WmfastError(f"{path} holds several tinyworlds runs ({names}); name one of them")
    raise WmfastError(f"{path}: not a tinyworlds run (expected <run>/<stage>/checkpoints/<stage>_step_<N>/ "
                      f"with stage one of {', '.join(STAGE_FOLDERS)})")


def _single_stage(path) -> str:
    """The stage of one checkpoint: from its name, else from <stage>/checkpoints/ above it."""
    stage, _ = _parse_name(os.path.basename(os.path.normpath(path)))
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    for i in range(len(parts) - 1, 0, -1):
        if stage:
            break
        if parts[i] == "checkpoints":
            stage = _stage_of(parts[i - 1])
    if stage is None:
        raise WmfastError(f"{path}: cannot tell which tinyworlds stage this checkpoint is "
                          f"(name it <stage>_step_<N> or keep it under <stage>/checkpoints/)")
    return stage


def _nonempty(found: dict, path) -> dict:
    if not any(found.values()):
        raise WmfastError(f"{path}: no checkpoints (expected <stage>_step_<N>/ folders holding {MODEL_FILE})")
    return found


def is_tinyworlds_path(path) -> bool:
    """True for anything `discover` would read and that is not a wmfast run."""
    path = os.fspath(path)
    if os.path.isdir(path) and any(os.path.isfile(os.path.join(path, s, "config.json")) for s in STAGES):
        return False
    try:
        discover(path)
        return True
    except WmfastError:
        return False


def _normalize_stages(stages) -> list:
    if stages is None:
        return None
    if isinstance(stages, str):
        stages = [s for s in stages.replace(",", " ").split() if s]
    out = []
    for s in stages:
        if _stage_of(s) is None:
            raise WmfastError(f"unknown stage {s!r} (expected one of tokenizer, actions, dynamics "
                              f"or {', '.join(STAGE_FOLDERS)})")
        out.append(_stage_of(s))
    return out


def _normalize_step(step) -> dict:
    """None, an int (every stage), 'N', 'stage=N[,stage=N]' or {stage: N} -> {stage or '*': N}."""
    if step is None:
        return {}
    if isinstance(step, dict):
        items = step.items()
    elif isinstance(step, int) or (isinstance(step, str) and step.strip().isdigit()):
        return {"*": int(step)}
    else:
        items = [part.split("=", 1) if "=" in part else (None, part) for part in str(step).split(",")]
    out = {}
    for stage, n in items:
        if stage is None or _stage_of(str(stage).strip()) is None or not str(n).strip().isdigit():
            raise WmfastError(f"bad step {step!r}: use N, or stage=N[,stage=N] with stage one of "
                              f"tokenizer, actions, dynamics")
        out[_stage_of(str(stage).strip())] = int(str(n).strip())
    return out


def select_checkpoints(path, step=None, stages=None) -> dict:
    """{wmfast stage: Checkpoint}: the latest step per stage unless `step` names one.

    stages: None (every stage found) or a subset (list or 'tokenizer,dynamics'); a requested
    stage that the run lacks is an error naming what it has."""
    found = discover(path)
    wanted, steps = _normalize_stages(stages), _normalize_step(step)
    if wanted is not None:
        missing = [s for s in wanted if s not in found]
        if missing:
            raise WmfastError(f"{path}: no {', '.join(missing)} checkpoints in this tinyworlds run "
                              f"(it has: {', '.join(found) or 'none'})")
        found = {s: found[s] for s in wanted}
    chosen = {}
    for stage, ckpts in found.items():
        want = steps.get(stage, steps.get("*"))
        if want is None:
            chosen[stage] = ckpts[-1]
            continue
        match = [c for c in ckpts if c.step == want]
        if not match:
            raise WmfastError(f"{path}: {stage} has no step {want} (steps: {', '.join(str(c.step) for c in ckpts)})")
        chosen[stage] = match[-1]
    return chosen


# -- reading one checkpoint ----------------------------------------------------------------------

def read_checkpoint(ckpt: Checkpoint):
    """-> (state dict of tensors with `_orig_mod.` stripped, config dict, source name for errors)."""
    if os.path.isdir(ckpt.path):
        weights = load_torch_safe(os.path.join(ckpt.path, MODEL_FILE), "weights file")
        state_path = os.path.join(ckpt.path, STATE_FILE)
        state = safe_load(state_path) if os.path.exists(state_path) else {}
        source = os.path.join(ckpt.path, MODEL_FILE)
    else:   # one file holding everything: {'model': state dict, 'config': ..., ...}
        state = safe_load(ckpt.path)
        weights = state.get("model", state.get("model_state_dict")) if isinstance(state, dict) else None
        source = ckpt.path
    if not isinstance(state, dict):
        raise WmfastError(f"{ckpt.path}: state is a {type(state).__name__}, expected a dict with 'config'")
    config = state.get("config") or {}
    if not isinstance(config, dict):
        raise WmfastError(f"{ckpt.path}: config is a {type(config).__name__}, expected a dict of settings")
    return clean_state_dict(weights, source), config, source


def clean_state_dict(weights, source: str) -> dict:
    """Check it is {str: tensor}; strip torch.compile's `_orig_mod.` and DDP's leading `module.`."""
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in weights.items()):
        raise WmfastError(f"{source}: not a state dict of tensors")
    out = {k.replace("_orig_mod.", ""): v for k, v in weights.items()}
    if out and all(k.startswith("module.") for k in out):
        out = {k[len("module."):]: v for k, v in out.items()}
    if len(out) != len(weights):
        raise WmfastError(f"{source}: keys collide once `_orig_mod.` prefixes are stripped")
    return out


# -- config mapping --------------------------------------------------------------------------------

def _int_setting(config: dict, key: str, source: str, default=None) -> int:
    value = config.get(key)
    if value is None:       # absent, or saved as None (tinyworlds then falls back too)
        value = DEFAULTS.get(key) if default is None else default
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, (list, tuple)) and key == "frame_size" and len(set(value)) == 1:
            return int(value[0])          # (H, W) with H == W
        raise WmfastError(f"{source}: config {key} must be an int, got {value!r}")
    return value


def _refuse_unsupported(stage: str, config: dict, weights: dict, source: str):
    moe_keys = [k for k in weights if ".ffn.router." in k or ".ffn.experts." in k]
    if config.get("use_moe") or moe_keys:
        detail = f"num_experts={config.get('num_experts', '?')}" if config.get("use_moe") else moe_keys[0]
        raise WmfastError(f"{source}: mixture-of-experts feed-forwards (use_moe, {detail}) are not supported; "
                          f"wmfast imports dense SwiGLU feed-forwards only")
    if stage == "actions" and config.get("use_windowed_attention"):
        raise WmfastError(f"{source}: the windowed-attention action encoder (use_windowed_attention) "
                          f"is not supported")


def _block_count(weights: dict, prefix: str):
    idx = [int(m.group(1)) for k in weights for m in [re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k)] if m]
    return max(idx) + 1 if idx else None


def implied_by_weights(stage: str, weights: dict) -> dict:
    """What the weights' shapes say about the config: {key: (value, weight key it comes from)}."""
    out = {}

    def shape(key):
        return tuple(weights[key].shape) if key in weights else None

    def note(field, value, key):
        if value is not None and field not in out:
            out[field] = (value, key)

    transformers = {"tokenizer": ["encoder.transformer.", "decoder.transformer."],
                    "actions": ["encoder.transformer.", "decoder.transformer."],
                    "dynamics": ["transformer."]}[stage]
    for prefix in transformers:
        n = _block_count(weights, prefix)
        if n is not None:
            if "num_blocks" in out and out["num_blocks"][0] != n:
                raise WmfastError(f"the weights' transformers have different depths ({out['num_blocks'][1]}: "
                                  f"{out['num_blocks'][0]} blocks, {prefix}blocks: {n})")
            note("num_blocks", n, f"{prefix}blocks.{n - 1}")
        q = shape(f"{prefix}blocks.0.spatial_attn.q_proj.weight")
        note("embed_dim", q and q[0], f"{prefix}blocks.0.spatial_attn.q_proj.weight")
        ffn = shape(f"{prefix}blocks.0.ffn.w_v.weight")
        note("ffn_dim", ffn and ffn[0], f"{prefix}blocks.0.ffn.w_v.weight")
        film = shape(f"{prefix}blocks.0.spatial_attn.norm.to_gamma_beta.1.weight")
        note("conditioning_dim", film and film[1], f"{prefix}blocks.0.spatial_attn.norm.to_gamma_beta.1.weight")
    proj = shape("encoder.patch_embed.proj.weight")
    if proj and proj[1] % 3 == 0 and math.isqrt(proj[1] // 3) ** 2 == proj[1] // 3:
        note("patch_size", math.isqrt(proj[1] // 3), "encoder.patch_embed.proj.weight")
    if stage == "tokenizer":
        head = shape("encoder.latent_head.1.weight")
        note("latent_dim", head and head[0], "encoder.latent_head.1.weight")
    if stage == "actions":
        head = shape("encoder.action_head.3.weight")
        note("action_dim", head and head[0], "encoder.action_head.3.weight")
    if stage == "dynamics":
        embed = shape("latent_embed.weight")
        note("latent_dim", embed and embed[1], "latent_embed.weight")
        logits = shape("output_mlp.weight")
        note("codebook_size", logits and logits[0], "output_mlp.weight")
    if stage in ("tokenizer", "actions") and "quantizer.basis" in weights and weights["quantizer.basis"].numel() > 1:
        note("num_bins", int(weights["quantizer.basis"][1]), "quantizer.basis")
    return out


def _check_against_weights(stage: str, config, config_dict: dict, weights: dict, source: str):
    """Name the first config value the weights contradict (clearer than a shape mismatch)."""
    implied = implied_by_weights(stage, weights)
    expected = {
        "num_blocks": config.num_blocks,
        "embed_dim": config.embed_dim,
        "ffn_dim": (2 * config.hidden_dim) // 3,
        "patch_size": config.patch_size,
    }
    if stage == "tokenizer":
        expected.update(latent_dim=config.latent_dim, num_bins=config.num_bins)
    elif stage == "actions":
        expected.update(action_dim=config.action_dim, num_bins=2)
    else:
        expected.update(latent_dim=config.latent_dim, codebook_size=config.codebook_size,
                        conditioning_dim=config.conditioning_dim)
    as_config = {"ffn_dim": "hidden_dim", "action_dim": "n_actions", "codebook_size": "num_bins"}
    for field, want in expected.items():
        if field not in implied or implied[field][0] == want:
            continue
        got, key = implied[field]
        name = as_config.get(field, field)
        setting = getattr(config, name, want)
        origin = "" if name in config_dict else " (not in the saved config; tinyworlds' default)"
        raise WmfastError(f"{source}: config {name}={setting}{origin} does not match the weights: "
                          f"{key} implies {field}={got}, the config gives {want}")


def map_config(stage: str, config: dict, weights: dict, source: str = "checkpoint", overrides: dict = None):
    """A tinyworlds config dict (+ its weights) -> the wmfast config dataclass of `stage`.

    Missing keys take tinyworlds' defaults (conditioning_dim: from the FiLM weights); `overrides`
    replace or fill saved values. Every value the weights' shapes reveal is cross-checked; frame_size
    and num_heads leave no trace in the weights and are taken as given."""
    config = {**config, **(overrides or {})}
    _refuse_unsupported(stage, config, weights, source)
    values = {k: _int_setting(config, k, source) for k in CONFIG_KEYS[stage]}
    if values["frame_size"] % values["patch_size"]:
        raise WmfastError(f"{source}: frame_size {values['frame_size']} is not a multiple of "
                          f"patch_size {values['patch_size']}")
    if values["embed_dim"] % values["num_heads"]:
        raise WmfastError(f"{source}: embed_dim {values['embed_dim']} is not divisible by "
                          f"num_heads {values['num_heads']}")
    if stage == "tokenizer":
        cfg = TokenizerConfig(**values)
    elif stage == "actions":
        cfg = TransformerLamConfig(**values)
    else:
        implied = implied_by_weights(stage, weights).get("conditioning_dim", (3, None))[0]
        cond = _int_setting(config, "conditioning_dim", source, default=implied)
        context = _int_setting(config, "context_length", source, default=DynamicsConfig.context_length)
        cfg = DynamicsConfig(**values, conditioning_dim=cond, context_length=context)
    _check_against_weights(stage, cfg, config, weights, source)
    return cfg


def _parse_overrides(overrides) -> dict:
    """{'frame_size': 64} or ['frame_size=64', ...] -> {key: int}."""
    if overrides is None or isinstance(overrides, dict):
        return dict(overrides or {})
    out = {}
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            raise WmfastError(f"bad config override {item!r}: use KEY=INT, e.g. frame_size=64")
        out[key.strip()] = int(value)
    return out


# -- loading and importing ----------------------------------------------------------------------

def load_checkpoint(ckpt: Checkpoint, overrides=None, device="cpu"):
    """One tinyworlds checkpoint -> the wmfast model, in eval mode."""
    weights, config, source = read_checkpoint(ckpt)
    cfg = map_config(ckpt.stage, config, weights, source, _parse_overrides(overrides))
    model = STAGES[ckpt.stage][0](cfg)
    load_state_dict_checked(model, weights, source)
    return model.to(device).eval()


def _load_chosen(chosen: dict, path, overrides, device, progress: bool) -> WorldModel:
    """{stage: Checkpoint} -> WorldModel (which checks that the stages fit together)."""
    models = {}
    for stage, ckpt in tqdm(chosen.items(), desc="import tinyworlds", unit="stage", disable=not progress):
        models[stage] = load_checkpoint(ckpt, overrides, device)
    return WorldModel(models.get("tokenizer"), models.get("actions"), models.get("dynamics"), path=os.fspath(path))


def load_tinyworlds(path, step=None, stages=None, overrides=None, device="cpu",
                    progress: bool = False) -> WorldModel:
    """A tinyworlds run (any path `discover` accepts) -> WorldModel, converted in memory."""
    return _load_chosen(select_checkpoints(path, step, stages), path, overrides, device, progress)


@dataclass
class ImportReport:
    out: str
    checkpoints: dict       # wmfast stage -> Checkpoint

    def __str__(self):
        lines = [f"  {stage:<10} <- {c.name} (step {c.step})" for stage, c in self.checkpoints.items()]
        return "\n".join([f"wrote wmfast run {self.out}"] + lines)


def import_tinyworlds(path, out, step=None, stages=None, overrides=None, overwrite: bool = False,
                      progress: bool = True) -> ImportReport:
    """Convert a tinyworlds run into a wmfast run folder `out` (safetensors + config.json per stage).

    step: None (latest), N for every stage, or 'stage=N,...'; stages: subset to import;
    overrides: config values that fill or replace the saved ones ({'frame_size': 64} or
    ['frame_size=64'])."""
    chosen = select_checkpoints(path, step, stages)
    out = os.fspath(out)
    existing = [s for s in chosen if os.path.exists(os.path.join(out, s))]
    if existing and not overwrite:
        raise WmfastError(f"{out} already has {', '.join(existing)}; pass overwrite=True (--overwrite) to replace")
    model = _load_chosen(chosen, path, overrides, "cpu", progress)
    modules = {"tokenizer": model.tokenizer, "actions": model.lam, "dynamics": model.dynamics}
    for stage, ckpt in chosen.items():
        save_model(modules[stage], os.path.join(out, stage),
                   metadata={"source": "tinyworlds", "checkpoint": ckpt.name, "step": ckpt.step})
    return ImportReport(out, chosen)
