"""Policy runs: `model.safetensors` + `config.json` (+ train.json, metrics.jsonl, curves.png) in one folder."""
import os

import torch
from safetensors.torch import save_file

from wmfast.checkpoint import load_state_dict_checked, read_safetensors
from wmfast.config import load_json, save_json
from wmfast.errors import WmfastError
from wmfast.policy.cnn import PolicyConfig

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def build_policy(cfg: PolicyConfig) -> torch.nn.Module:
    from wmfast.policy.act import ACTPolicy
    from wmfast.policy.bc import BCPolicy
    from wmfast.policy.chunk import ChunkPolicy

    return {"bc": BCPolicy, "chunk": ChunkPolicy, "act": ACTPolicy}[cfg.kind](cfg)


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def save_policy(model, run_dir, metadata: dict = None) -> str:
    """Write RUN/model.safetensors and RUN/config.json atomically (file by file)."""
    os.makedirs(run_dir, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = os.path.join(run_dir, WEIGHTS + ".tmp")
    save_file(state, tmp, metadata={k: str(v) for k, v in (metadata or {}).items()})
    os.replace(tmp, os.path.join(run_dir, WEIGHTS))
    save_json({"model": "policy", **model.config.to_dict()}, os.path.join(run_dir, CONFIG))
    return run_dir


def load_policy(run_dir, device="cpu") -> torch.nn.Module:
    """A policy run folder -> the policy in eval mode."""
    if not os.path.isdir(run_dir):
        raise WmfastError(f"policy run not found: {run_dir}")
    d = load_json(os.path.join(run_dir, CONFIG))
    if d.pop("model", None) != "policy":
        raise WmfastError(f"{run_dir}/{CONFIG} is not a policy config (train one with `wmfast policy train`)")
    cfg = PolicyConfig.from_dict(d, source=f"{run_dir}/{CONFIG}")
    model = build_policy(cfg)
    path = os.path.join(run_dir, WEIGHTS)
    load_state_dict_checked(model, read_safetensors(path), path)
    return model.to(device).eval()
