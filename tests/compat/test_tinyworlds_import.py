"""Importing tinyworlds runs of other configs, and every way an import can go wrong.

Runs are written here in tinyworlds' layout: model_state_dict.pt is the state dict of a randomly
initialised (and perturbed) model, whose keys are tinyworlds' keys; state.pt is a torch.save'd dict
whose config holds an instance of a fake tinyworlds dataclass pickled as `utils.config`. The import
must rebuild each model exactly: identical indices and rollouts, identical float outputs."""
import dataclasses
import os
import shutil
import sys
import types

import pytest
import torch

import wmfast
from wmfast.cli import main
from wmfast.compat.tinyworlds import import_tinyworlds, load_tinyworlds, select_checkpoints
from wmfast.errors import WmfastError
from wmfast.models import (DynamicsConfig, DynamicsModel, LatentActionConfig, LatentActionModel, TokenizerConfig,
                           VideoTokenizer)

FOLDERS = {"tokenizer": "video_tokenizer", "actions": "latent_actions", "dynamics": "dynamics"}



@dataclasses.dataclass
class DistributedConfig:      # stands in for tinyworlds' utils.config.DistributedConfig
    use_ddp: bool = False
    use_fsdp: bool = False


@pytest.fixture(autouse=True)
def tinyworlds_utils_module(monkeypatch):
    """Pickle DistributedConfig as tinyworlds' `utils.config` (the module exists only while saving)."""
    module = types.ModuleType("utils.config")
    module.DistributedConfig = DistributedConfig
    monkeypatch.setattr(DistributedConfig, "__module__", "utils.config")
    monkeypatch.setitem(sys.modules, "utils", types.ModuleType("utils"))
    monkeypatch.setitem(sys.modules, "utils.config", module)
    yield
    assert sys.modules.get("utils.config") is module   # the import never replaced it


def perturbed(model, seed):
    """Move every parameter off its initial value, so no norm or FiLM sits at an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def build_models(shared: dict, sizes: dict, seed=0):
    torch.manual_seed(seed)
    tok = VideoTokenizer(TokenizerConfig(**{k: shared[k] for k in ("frame_size", "patch_size", "latent_dim",
                                                                   "num_bins")}, **sizes["tokenizer"]))
    lam = LatentActionModel(LatentActionConfig(frame_size=shared["frame_size"], patch_size=shared["patch_size"],
                                               n_actions=shared["n_actions"], **sizes["actions"]))
    dyn = DynamicsModel(DynamicsConfig(**{k: shared[k] for k in ("frame_size", "patch_size", "latent_dim", "num_bins",
                                                                 "context_length")},
                                       conditioning_dim=lam.config.action_dim, **sizes["dynamics"]))
    return {"tokenizer": perturbed(tok, seed), "actions": perturbed(lam, seed + 1),
            "dynamics": perturbed(dyn, seed + 2)}


def tinyworlds_config(shared: dict, stage_sizes: dict, drop=()):
    """A stage's saved config as tinyworlds writes it: sizes, unrelated entries, a pickled dataclass."""
    cfg = {**shared, **stage_sizes, "batch_size_per_gpu": 8, "learning_rate": 3e-4, "dataset": "PONG",
           "compile": True, "checkpoint": None, "distributed": DistributedConfig(), "fps": None}
    return {k: v for k, v in cfg.items() if k not in drop}


def write_checkpoint(run, stage, weights, config, step=1000, state_extra=None):
    folder = os.path.join(run, FOLDERS[stage], "checkpoints", f"{FOLDERS[stage]}_step_{step}")
    os.makedirs(folder, exist_ok=True)
    torch.save(weights, os.path.join(folder, "model_state_dict.pt"))
    torch.save({}, os.path.join(folder, "optim_state_dict.pt"))
    torch.save({"scheduler_state_dict": None, "config": config, "step": step,
                "timestamp": "2025_01_01_00_00_00", **(state_extra or {})}, os.path.join(folder, "state.pt"))
    return folder


def write_run(run, models, shared, sizes, drop=None, step=1000):
    for stage, model in models.items():
        config = tinyworlds_config(shared, sizes[stage], (drop or {}).get(stage, ()))
        write_checkpoint(run, stage, model.state_dict(), config, step)
    return run


def assert_same_outputs(m, models, frames):
    tok, lam, dyn = models["tokenizer"], models["actions"], models["dynamics"]
    for stage, model in models.items():
        assert {"tokenizer": m.tokenizer, "actions": m.lam, "dynamics": m.dynamics}[stage].config == model.config
    idx = m.tokenizer.encode(frames)
    assert torch.equal(idx, tok.encode(frames))
    lat = m.tokenizer.latents(idx)
    assert torch.equal(lat, tok.latents(idx))
    torch.testing.assert_close(m.tokenizer.decode(lat), tok.decode(lat), atol=1e-6, rtol=0)
    act = m.lam.encode(frames)
    assert torch.equal(m.lam.indices(act), lam.indices(lam.encode(frames)))
    torch.testing.assert_close(m.lam.decode(frames, act), lam.decode(frames, act), atol=1e-6, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(m.dynamics(lat, act), dyn(lat, act), atol=1e-6, rtol=0)
    ctx = lat[:, :-1]
    assert torch.equal(m.dynamics.generate(ctx, act, steps=4), dyn.generate(ctx, act, steps=4))


def random_frames(frame_size, T=3, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, T, 3, frame_size, frame_size, generator=g) * 2 - 1


CONFIGS = {
    # frame/patch size, dims, blocks, levels and actions all differ from the fixture's.
    "patch2-bins3": (dict(frame_size=16, patch_size=2, latent_dim=4, num_bins=3, n_actions=4, context_length=3),
                     {"tokenizer": dict(embed_dim=32, num_heads=2, hidden_dim=48, num_blocks=1),
                      "actions": dict(embed_dim=16, num_heads=4, hidden_dim=32, num_blocks=2),
                      "dynamics": dict(embed_dim=32, num_heads=8, hidden_dim=96, num_blocks=2)}),
    "patch8-actions16": (dict(frame_size=24, patch_size=8, latent_dim=2, num_bins=5, n_actions=16, context_length=5),
                         {"tokenizer": dict(embed_dim=16, num_heads=4, hidden_dim=40, num_blocks=2),
                          "actions": dict(embed_dim=24, num_heads=3, hidden_dim=36, num_blocks=1),
                          "dynamics": dict(embed_dim=20, num_heads=2, hidden_dim=30, num_blocks=3)}),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_other_configs_import_exactly(tmp_path, name):
    shared, sizes = CONFIGS[name]
    models = build_models(shared, sizes)
    run = write_run(str(tmp_path / "results" / name), models, shared, sizes)
    del sys.modules["utils.config"].DistributedConfig       # importing must not need tinyworlds' classes
    frames = random_frames(shared["frame_size"])
    import_tinyworlds(tmp_path / "results", tmp_path / "out", progress=False)
    assert_same_outputs(wmfast.load(tmp_path / "out"), models, frames)
    assert_same_outputs(wmfast.load(run), models, frames)
    sys.modules["utils.config"].DistributedConfig = DistributedConfig


def test_missing_keys_take_tinyworlds_defaults(tmp_path):
    # num_heads/hidden_dim/num_blocks/latent_dim/num_bins/n_actions absent: 8/256/4/6/4/8;
    # conditioning_dim absent: from to_gamma_beta.1.weight; context_length absent: wmfast's default.
    shared = dict(frame_size=16, patch_size=4, latent_dim=6, num_bins=4, n_actions=8, context_length=4)
    size = dict(embed_dim=32, num_heads=8, hidden_dim=256, num_blocks=4)
    sizes = {s: size for s in FOLDERS}
    models = build_models(shared, sizes)
    gone = ("num_heads", "hidden_dim", "num_blocks", "latent_dim", "num_bins", "n_actions", "context_length")
    run = write_run(str(tmp_path / "run"), models, shared, sizes, drop={s: gone for s in FOLDERS})
    assert_same_outputs(load_tinyworlds(run), models, random_frames(16, T=2, B=1))


def test_orig_mod_prefixes_are_stripped(tmp_path):
    shared, sizes = CONFIGS["patch2-bins3"]
    models = build_models(shared, sizes)
    cfg = tinyworlds_config(shared, sizes["tokenizer"])
    compiled = {f"_orig_mod.{k}": v for k, v in models["tokenizer"].state_dict().items()}
    write_checkpoint(str(tmp_path / "run"), "tokenizer", compiled, cfg)
    m = load_tinyworlds(tmp_path / "run")
    frames = random_frames(16)
    assert torch.equal(m.tokenizer.encode(frames), models["tokenizer"].encode(frames))


# -- finding checkpoints --------------------------------------------------------------------------

@pytest.fixture
def small_run(tmp_path):
    """A run with tokenizer steps 500 and 1000 (different weights) and dynamics step 1000."""
    shared, sizes = CONFIGS["patch2-bins3"]
    old, new = build_models(shared, sizes, seed=1), build_models(shared, sizes, seed=2)
    run = str(tmp_path / "results" / "my_run")
    tok_config = tinyworlds_config(shared, sizes["tokenizer"])
    write_checkpoint(run, "tokenizer", old["tokenizer"].state_dict(), tok_config, 500)
    write_checkpoint(run, "tokenizer", new["tokenizer"].state_dict(), tok_config, 1000)
    write_checkpoint(run, "dynamics", new["dynamics"].state_dict(), tinyworlds_config(shared, sizes["dynamics"]), 1000)
    return run, old, new, shared, sizes


def test_latest_step_unless_one_is_named(small_run):
    run, old, new, *_ = small_run
    frames = random_frames(16)
    assert torch.equal(load_tinyworlds(run).tokenizer.encode(frames), new["tokenizer"].encode(frames))
    for step in (500, "500", "tokenizer=500", {"tokenizer": 500}):
        m = load_tinyworlds(run, step=step, stages=["tokenizer"])
        assert torch.equal(m.tokenizer.encode(frames), old["tokenizer"].encode(frames)), step
    with pytest.raises(WmfastError, match=r"tokenizer has no step 7 \(steps: 500, 1000\)"):
        select_checkpoints(run, step=7)
    with pytest.raises(WmfastError, match="dynamics has no step 500"):
        select_checkpoints(run, step=500)
    with pytest.raises(WmfastError, match="bad step"):
        select_checkpoints(run, step="latest")


def test_paths_that_name_the_same_run(small_run, tmp_path):
    run, *_ = small_run
    want = select_checkpoints(run)
    assert set(want) == {"tokenizer", "dynamics"} and want["tokenizer"].step == 1000
    assert select_checkpoints(os.path.dirname(run)) == want                    # results/
    assert select_checkpoints(tmp_path) == want                                # the folder holding results/
    tok_dir = os.path.join(run, "video_tokenizer")
    for path in (tok_dir, os.path.join(tok_dir, "checkpoints")):
        assert select_checkpoints(path) == {"tokenizer": want["tokenizer"]}
    ckpt = os.path.join(tok_dir, "checkpoints", "video_tokenizer_step_500")
    for path in (ckpt, os.path.join(ckpt, "model_state_dict.pt")):
        got = select_checkpoints(path)["tokenizer"]
        assert (got.path, got.step) == (ckpt, 500)


def test_missing_stage_is_named(small_run):
    run, *_ = small_run
    with pytest.raises(WmfastError, match=r"no actions checkpoints .*\(it has: tokenizer, dynamics\)"):
        select_checkpoints(run, stages="tokenizer,actions")
    m = wmfast.load(run)
    assert m.lam is None
    with pytest.raises(WmfastError, match=r"missing stage\(s\) \['actions'\]"):
        m.require("tokenizer", "actions", "dynamics")


def test_not_a_run_and_several_runs(small_run, tmp_path):
    run, *_ = small_run
    with pytest.raises(WmfastError, match="no such tinyworlds run"):
        select_checkpoints(tmp_path / "missing")
    os.makedirs(tmp_path / "empty")
    with pytest.raises(WmfastError, match="not a tinyworlds run"):
        select_checkpoints(tmp_path / "empty")
    shutil.copytree(run, os.path.join(os.path.dirname(run), "other_run"))
    with pytest.raises(WmfastError, match=r"several tinyworlds runs \(my_run, other_run\)"):
        select_checkpoints(os.path.dirname(run))


def test_single_file_checkpoint_of_older_tinyworlds(tmp_path):
    # Older tinyworlds saved one <stage>_step_<N>_<timestamp>.pth holding weights and config together.
    shared, sizes = CONFIGS["patch8-actions16"]
    models = build_models(shared, sizes)
    folder = tmp_path / "run" / "latent_actions" / "checkpoints"
    os.makedirs(folder)
    torch.save({"model": models["actions"].state_dict(), "optimizer_state_dict": None,
                "config": tinyworlds_config(shared, sizes["actions"]), "step": 300},
               folder / "latent_actions_step_300_2025_01_01_00_00_00.pth")
    m = load_tinyworlds(tmp_path / "run")
    frames = random_frames(24)
    assert torch.equal(m.lam.indices(m.lam.encode(frames)), models["actions"].indices(models["actions"].encode(frames)))


# -- errors that name the problem -----------------------------------------------------------------

def tokenizer_run(tmp_path, edit_weights=None, edit_config=None):
    shared, sizes = CONFIGS["patch2-bins3"]
    models = build_models(shared, sizes)
    weights = dict(models["tokenizer"].state_dict())
    cfg = tinyworlds_config(shared, sizes["tokenizer"])
    if edit_weights:
        edit_weights(weights)
    if edit_config:
        edit_config(cfg)
    write_checkpoint(str(tmp_path / "run"), "tokenizer", weights, cfg)
    return tmp_path / "run"


@pytest.mark.parametrize("edit_weights, edit_config, message", [
    (lambda w: w.pop("encoder.latent_head.1.bias"), None, r"missing keys \['encoder.latent_head.1.bias'\]"),
    (lambda w: w.update({"encoder.extra.weight": torch.zeros(2)}), None, r"unexpected keys \['encoder.extra.weight'\]"),
    (lambda w: w.update({"encoder.latent_head.0.weight": torch.ones(33)}), None,
     r"shape mismatch for encoder.latent_head.0.weight: checkpoint \(33,\), config expects \(32,\)"),
    (None, lambda c: c.update(num_blocks=3),
     r"config num_blocks=3 does not match the weights: .*blocks.0 implies num_blocks=1"),
    (None, lambda c: c.update(embed_dim=48), r"config embed_dim=48 does not match the weights"),
    (None, lambda c: c.update(latent_dim=3), r"config latent_dim=3 does not match the weights"),
    (None, lambda c: c.update(num_bins=4), r"config num_bins=4 does not match the weights: quantizer.basis"),
    (None, lambda c: c.update(patch_size=4, frame_size=16), r"config patch_size=4 does not match the weights"),
    (None, lambda c: c.pop("embed_dim"), r"config embed_dim=128 \(not in the saved config; tinyworlds' default\)"),
    (None, lambda c: c.update(embed_dim="32"), r"config embed_dim must be an int, got '32'"),
    (None, lambda c: c.update(num_heads=3), r"embed_dim 32 is not divisible by num_heads 3"),
    (None, lambda c: c.update(use_moe=True, num_experts=4), r"mixture-of-experts .*num_experts=4.* not supported"),
    (lambda w: w.update({"encoder.transformer.blocks.0.ffn.router.weight": torch.zeros(4, 32)}), None,
     r"mixture-of-experts .*ffn.router.weight.* not supported"),
])
def test_errors_name_the_problem(tmp_path, edit_weights, edit_config, message):
    run = tokenizer_run(tmp_path, edit_weights, edit_config)
    with pytest.raises(WmfastError, match=message) as err:
        load_tinyworlds(run)
    assert "\n" not in str(err.value)


def test_config_overrides_fill_what_the_saved_config_lacks(tmp_path):
    run = tokenizer_run(tmp_path, edit_config=lambda c: [c.pop(k) for k in ("frame_size", "embed_dim")])
    with pytest.raises(WmfastError, match="embed_dim=128"):
        load_tinyworlds(run)
    m = load_tinyworlds(run, overrides=["frame_size=16", "embed_dim=32"])
    assert (m.tokenizer.config.frame_size, m.tokenizer.config.embed_dim) == (16, 32)


def test_stages_that_do_not_fit_together(tmp_path):
    shared, sizes = CONFIGS["patch2-bins3"]
    models = build_models(shared, sizes)
    run = str(tmp_path / "run")
    write_checkpoint(run, "tokenizer", models["tokenizer"].state_dict(), tinyworlds_config(shared, sizes["tokenizer"]))
    other = {**shared, "latent_dim": 3}
    dyn = perturbed(DynamicsModel(DynamicsConfig(**{k: other[k] for k in ("frame_size", "patch_size", "latent_dim",
                                                                          "num_bins")}, conditioning_dim=2,
                                                 **sizes["dynamics"])), 0)
    write_checkpoint(run, "dynamics", dyn.state_dict(), tinyworlds_config(other, sizes["dynamics"]))
    with pytest.raises(WmfastError, match="config mismatch: dynamics latent_dim=3 but tokenizer has 4"):
        load_tinyworlds(run)


def test_corrupt_files(tmp_path):
    run = tokenizer_run(tmp_path)
    folder = run / "video_tokenizer" / "checkpoints" / "video_tokenizer_step_1000"
    good = (folder / "model_state_dict.pt").read_bytes()
    (folder / "model_state_dict.pt").write_bytes(good[: len(good) // 3])
    with pytest.raises(WmfastError, match="corrupt or untrusted weights file .*model_state_dict.pt"):
        load_tinyworlds(run)
    (folder / "model_state_dict.pt").write_bytes(good)
    (folder / "state.pt").write_bytes(b"not a pickle at all")
    with pytest.raises(WmfastError, match="corrupt or unreadable pickle .*state.pt"):
        load_tinyworlds(run)
    torch.save(["a", "list"], folder / "state.pt")
    with pytest.raises(WmfastError, match="state is a list"):
        load_tinyworlds(run)


class Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_hostile_state_pt_is_refused_and_nothing_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    shared, sizes = CONFIGS["patch2-bins3"]
    models = build_models(shared, sizes)
    write_checkpoint(str(tmp_path / "run"), "tokenizer", models["tokenizer"].state_dict(),
                     tinyworlds_config(shared, sizes["tokenizer"]), state_extra={"evil": Hostile(marker)})
    with pytest.raises(WmfastError, match=r"state.pt: refusing to call posix.system"):
        load_tinyworlds(tmp_path / "run")
    assert main(["import", "tinyworlds", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 2
    assert "refusing to call posix.system" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out").exists()
