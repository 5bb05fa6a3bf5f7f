"""Model checkpoints: `model.safetensors` + `config.json` (its "kind" names the model) in one folder.

A run directory holds up to three stage folders: tokenizer/, actions/, dynamics/, and lapa/ when a
LAPA model was trained. A policy run is one such folder (its kind: bc, chunk or act).
Every file is written atomically (temp file + os.replace), so a killed run never leaves a
half-written checkpoint. Nothing here unpickles anything.
"""
import os

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from wmfast.config import load_json, save_json
from wmfast.errors import WmfastError
from wmfast.models.action_map import ACTION_MAP, FRAME_MAP_WEIGHTS, ActionMap, FrameActionMap, FrameActionMapConfig
from wmfast.models.lapa import CodeClassifier, LapaModel
from wmfast.models.policy import POLICY_KINDS
from wmfast.models.registry import KINDS, STAGES, kind_of  # noqa: F401  (STAGES: re-exported for callers)

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def save_model(model, folder, metadata: dict = None):
    """Write model.safetensors + config.json into folder (atomically, file by file)."""
    kind = kind_of(model)
    if kind is None:
        raise WmfastError(f"not a wmfast model: {type(model).__name__}")
    os.makedirs(folder, exist_ok=True)
    save_weights(model, os.path.join(folder, WEIGHTS), metadata)
    save_json({"kind": kind, **model.config.to_dict()}, os.path.join(folder, CONFIG))
    return folder


def save_weights(model, path, metadata: dict = None):
    """A module's state dict -> safetensors file at path, atomically (temp file + os.replace)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = f"{path}.tmp"
    save_file(state, tmp, metadata={k: str(v) for k, v in (metadata or {}).items()})
    os.chmod(tmp, 0o666 & ~_umask())   # safetensors creates files 0600; match the other files (umask)
    os.replace(tmp, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_config(folder, stage: str = None):
    """config.json of a model folder -> (kind, config dataclass); stage: the kind expected."""
    d = load_json(os.path.join(folder, CONFIG))
    if not isinstance(d, dict):
        raise WmfastError(f"{folder}/{CONFIG}: expected a JSON object of config fields, got {type(d).__name__}")
    if d.get("model") == "policy":   # policy runs before the registry marked themselves so
        d = {k: v for k, v in d.items() if k != "model"}
    kind = d.get("kind", stage)
    if kind not in KINDS:
        raise WmfastError(f"{folder}/{CONFIG}: unknown model kind {kind!r} (expected one of {list(KINDS)})")
    if stage is not None and kind != stage:
        raise WmfastError(f"{folder}/{CONFIG}: holds a {kind} model, expected {stage}")
    return kind, KINDS[kind][1].from_dict(d, source=f"{folder}/{CONFIG}")


def load_state_dict_checked(model, state: dict, source: str):
    """load_state_dict with missing / unexpected keys and shape mismatches named in one line."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        raise WmfastError(f"{source}: weights do not match the config ({'; '.join(parts)})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise WmfastError(f"{source}: shape mismatch for {k}: checkpoint {tuple(v.shape)}, "
                              f"config expects {tuple(own[k].shape)}")
    model.load_state_dict(state)
    return model


def read_safetensors(path) -> dict:
    if not os.path.exists(path):
        raise WmfastError(f"missing file: {path}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise WmfastError(f"corrupt safetensors file {path}: {e}") from None


def load_model(folder, stage: str = None, device="cpu", weights_folder=None):
    """A model folder -> the model in eval mode; stage: the kind expected; weights_folder: read
    model.safetensors from there instead (LAPA's best/)."""
    if not os.path.isdir(folder):
        raise WmfastError(f"missing checkpoint folder: {folder}")
    kind, cfg = load_config(folder, stage)
    model = KINDS[kind][0](cfg)
    path = os.path.join(weights_folder or folder, WEIGHTS)
    load_state_dict_checked(model, read_safetensors(path), path)
    return model.to(device).eval()


def load_policy(folder, device="cpu"):
    """A policy run folder -> the policy (BC, chunk or ACT) in eval mode."""
    if not os.path.isdir(folder):
        raise WmfastError(f"policy run not found: {folder}")
    kind = load_config(folder)[0]
    if kind not in POLICY_KINDS:
        raise WmfastError(f"{folder}/{CONFIG} holds a {kind} model, not a policy (train one with `wmfast policy train`)")
    return load_model(folder, kind, device)


def save_action_map(amap: ActionMap, run_dir) -> str:
    """RUN/action_map.json (+ action_map.safetensors: the frame-conditioned map, when there is one)."""
    path = os.path.join(run_dir, ACTION_MAP)
    weights = os.path.join(run_dir, FRAME_MAP_WEIGHTS)
    if amap.frame_map is not None:
        save_weights(amap.frame_map, weights)
    elif os.path.exists(weights):
        os.remove(weights)   # a stale map from an earlier fit must not be picked up
    save_json(amap.to_dict(), path)
    return path


def load_action_map(run_dir) -> ActionMap:
    """A run dir (or its action_map.json) -> the ActionMap, with its frame-conditioned map when saved."""
    path = os.path.join(run_dir, ACTION_MAP) if os.path.isdir(run_dir) else os.fspath(run_dir)
    if not os.path.isfile(path):
        raise WmfastError(f"{run_dir} has no {ACTION_MAP}; run `wmfast train action-map --run {run_dir}` "
                          f"to measure which latent code each game action produces")
    d = load_json(path)
    amap = ActionMap.from_dict(d, path)
    info = d.get("frame_map")
    if isinstance(info, dict):
        cfg = FrameActionMapConfig(num_game_actions=amap.num_game_actions, num_latents=amap.num_latents,
                                   width=int(info.get("width", 16)))
        net = FrameActionMap(cfg)
        weights = os.path.join(os.path.dirname(path), info.get("weights", FRAME_MAP_WEIGHTS))
        load_state_dict_checked(net, read_safetensors(weights), weights)
        amap.frame_map = net.eval()
        amap.frame_map_info = {k: v for k, v in info.items() if k not in ("weights", "width")}
    return amap


def save_torch_atomic(obj, path):
    """torch.save through a temp file; only tensors and plain containers, so weights_only loads it."""
    tmp = f"{path}.tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_torch_safe(path, what: str = "file"):
    """torch.load with weights_only=True: tensors and plain containers only, never code."""
    if not os.path.isfile(path):
        raise WmfastError(f"missing file: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain data
        raise WmfastError(f"corrupt or untrusted {what} {path}: {str(e).splitlines()[0]}") from None


# -- LAPA (wmfast.lapa): RUN/lapa/ holds model.safetensors + config.json, best/, and the optional
# code -> game action classifier (classifier.safetensors + classifier.json)
LAPA_FOLDER = "lapa"
CLASSIFIER_WEIGHTS, CLASSIFIER_CONFIG = "classifier.safetensors", "classifier.json"


def lapa_folder(path) -> str:
    """A run dir (holding lapa/) or the lapa folder itself -> the lapa folder."""
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, LAPA_FOLDER, CONFIG)):
        return os.path.join(path, LAPA_FOLDER)
    if os.path.isfile(os.path.join(path, CONFIG)):
        return path
    raise WmfastError(f"{path}: no LAPA model here (expected {os.path.join(path, LAPA_FOLDER, CONFIG)})")


def load_lapa(path, device="cpu", best: bool = False) -> LapaModel:
    """A run dir or lapa folder -> LapaModel in eval mode (classifier attached when one was trained)."""
    folder = lapa_folder(path)
    if best and not os.path.isfile(os.path.join(folder, "best", WEIGHTS)):
        raise WmfastError(f"{folder}: no best/ checkpoint (it is written at the first validation)")
    model = load_model(folder, "lapa", weights_folder=os.path.join(folder, "best") if best else None)
    clf = load_classifier(folder)
    if clf is not None:
        model.attach_classifier(clf)
    return model.to(device).eval()


def load_classifier(folder):
    """The run's classifier, or None when none was trained. classifier.json: its config and the
    report of its training (files written before the registry have no "kind")."""
    path = os.path.join(folder, CLASSIFIER_CONFIG)
    if not os.path.isfile(path):
        return None
    d = load_json(path)
    if not isinstance(d, dict):
        raise WmfastError(f"{path}: expected a JSON object of config fields, got {type(d).__name__}")
    if d.get("kind", "lapa_classifier") != "lapa_classifier":
        raise WmfastError(f"{path}: holds a {d['kind']} model, expected lapa_classifier")
    model_cls, cfg_cls = KINDS["lapa_classifier"]
    clf = model_cls(cfg_cls.from_dict({k: v for k, v in d.items() if k != "report"}, source=path))
    weights = os.path.join(folder, CLASSIFIER_WEIGHTS)
    return load_state_dict_checked(clf, read_safetensors(weights), weights).eval()


def save_classifier(clf: CodeClassifier, folder, report: dict = None):
    save_weights(clf, os.path.join(folder, CLASSIFIER_WEIGHTS))
    save_json({"kind": kind_of(clf), **clf.config.to_dict(), "report": report or {}},
              os.path.join(folder, CLASSIFIER_CONFIG))
