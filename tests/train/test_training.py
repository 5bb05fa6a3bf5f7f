"""Training: checkpoints round-trip, an interrupted run resumes to the same weights, stage
order and bad checkpoints give clear errors, and the train/demo CLI runs end to end."""
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

import wmfast
from wmfast.checkpoint import load_model, save_model
from wmfast.cli import main
from wmfast.errors import WmfastError
from wmfast.models import TokenizerConfig, VideoTokenizer
from wmfast.train import TrainConfig, train_stage

DATA = "game:pong:6"


def tiny(steps=4, **kw):
    return TrainConfig(steps=steps, batch_size=2, preset="tiny", log_every=2, save_every=2, warmup_steps=2,
                       progress=False, **kw)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_game_cache):
    run = str(tmp_path_factory.mktemp("run"))
    for stage in ("tokenizer", "actions", "dynamics"):
        train_stage(stage, run, DATA, tiny())
    return run


def test_dynamics_trains_on_the_window_rollouts_use(tmp_path, trained_run, monkeypatch, tiny_game_cache):
    # A rollout predicts frame C+1 from C context frames (temporal positions 0..C): the dynamics'
    # training clips must be that window, not C frames with the target at position C-1.
    from wmfast.models import DynamicsModel

    seen = []
    original = DynamicsModel.training_loss
    monkeypatch.setattr(DynamicsModel, "training_loss",
                        lambda self, latents, *a, **k: seen.append(latents.shape[1]) or original(self, latents, *a, **k))
    run = tmp_path / "run"
    for stage in ("tokenizer", "actions"):
        shutil.copytree(os.path.join(trained_run, stage), run / stage)
    train_stage("dynamics", str(run), DATA, tiny(steps=2, clip_len=3))
    context = wmfast.load(str(run)).dynamics.config.context_length
    assert context == 3 and seen == [context + 1] * 2


def test_checkpoint_round_trip(tmp_path):
    model = VideoTokenizer(TokenizerConfig(frame_size=16, patch_size=4, embed_dim=16, num_heads=2,
                                           hidden_dim=32, num_blocks=1, latent_dim=2, num_bins=3))
    save_model(model, tmp_path / "tokenizer")
    loaded = load_model(tmp_path / "tokenizer", "tokenizer")
    assert loaded.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert json.loads((tmp_path / "tokenizer" / "config.json").read_text())["kind"] == "tokenizer"


def test_three_stages_write_checkpoints_and_metrics(trained_run):
    for stage in ("tokenizer", "actions", "dynamics"):
        folder = os.path.join(trained_run, stage)
        for name in ("model.safetensors", "config.json", "train_state.pt", "metrics.jsonl", "curves.png"):
            assert os.path.isfile(os.path.join(folder, name)), name
    rows = [json.loads(x) for x in open(os.path.join(trained_run, "actions", "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [2, 4]
    for key in ("loss", "lr", "it_per_s", "samples_per_s", "encoder_variance", "codebook_usage", "action_nmi"):
        assert key in rows[-1]
    tok_row = json.loads(open(os.path.join(trained_run, "tokenizer", "metrics.jsonl")).readlines()[-1])
    assert "psnr" in tok_row and "codebook_usage" in tok_row
    dyn_row = json.loads(open(os.path.join(trained_run, "dynamics", "metrics.jsonl")).readlines()[-1])
    assert 0.0 <= dyn_row["masked_accuracy"] <= 1.0
    m = wmfast.load(trained_run)
    assert m.dynamics.config.conditioning_dim == m.lam.config.action_dim
    assert m.dynamics.config.codebook_size == m.tokenizer.config.num_codes


def test_resume_after_interrupt_equals_uninterrupted(tmp_path, tiny_game_cache):
    full = tmp_path / "full"
    train_stage("tokenizer", str(full), DATA, tiny(steps=6, seed=3))

    def stop_at_3(step, model):
        if step == 3:
            raise KeyboardInterrupt

    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        train_stage("tokenizer", str(part), DATA, tiny(steps=6, seed=3), callback=stop_at_3)
    assert torch.load(part / "tokenizer" / "train_state.pt", weights_only=True)["step"] == 3
    train_stage("tokenizer", str(part), DATA, tiny(steps=6, seed=3), resume=True)
    a = load_file(full / "tokenizer" / "model.safetensors")
    b = load_file(part / "tokenizer" / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(x)["step"] for x in open(part / "tokenizer" / "metrics.jsonl")]
    assert steps == [2, 4, 6]


def test_stage_order_and_overwrite_are_enforced(tmp_path, trained_run, tiny_game_cache):
    with pytest.raises(WmfastError, match="needs a trained tokenizer and actions"):
        train_stage("dynamics", str(tmp_path), DATA, tiny())
    with pytest.raises(WmfastError, match="--resume"):
        train_stage("tokenizer", trained_run, DATA, tiny())
    with pytest.raises(WmfastError, match="nothing to resume"):
        train_stage("tokenizer", str(tmp_path / "new"), DATA, tiny(), resume=True)


def test_bad_checkpoints_give_one_line_errors(tmp_path, trained_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "tokenizer" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WmfastError, match="corrupt safetensors"):
        wmfast.load(str(run))
    shutil.copy(os.path.join(trained_run, "tokenizer", "model.safetensors"), run / "tokenizer")
    cfg = json.loads((run / "tokenizer" / "config.json").read_text())
    cfg["embed_dim"] *= 2
    (run / "tokenizer" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WmfastError, match="shape mismatch"):
        wmfast.load(str(run))
    (run / "tokenizer" / "config.json").write_text("{broken")
    with pytest.raises(WmfastError, match="corrupt JSON"):
        wmfast.load(str(run))
    with pytest.raises(WmfastError, match="no such run directory"):
        wmfast.load(str(tmp_path / "missing"))
    dyn_cfg = json.loads(open(os.path.join(trained_run, "dynamics", "config.json")).read())
    dyn_cfg["conditioning_dim"] += 1
    shutil.copytree(os.path.join(trained_run, "tokenizer"), tmp_path / "mix" / "tokenizer")
    shutil.copytree(os.path.join(trained_run, "actions"), tmp_path / "mix" / "actions")
    shutil.copytree(os.path.join(trained_run, "dynamics"), tmp_path / "mix" / "dynamics")
    (tmp_path / "mix" / "dynamics" / "config.json").write_text(json.dumps(dyn_cfg))
    with pytest.raises(WmfastError):
        wmfast.load(str(tmp_path / "mix"))


def test_cli_train_and_errors_exit_2(tmp_path, capsys, tiny_game_cache):
    run = str(tmp_path / "cli")
    args = ["--run", run, "--data", DATA, "--preset", "tiny", "--steps", "2", "--batch-size", "2", "--log-every", "1"]
    assert main(["train", "tokenizer", *args, "--set", "embed_dim=16", "num_heads=2"]) == 0
    assert wmfast.load(run).tokenizer.config.embed_dim == 16
    assert main(["train", "dynamics", *args]) == 2
    assert "needs a trained" in capsys.readouterr().err
    assert main(["train", "actions", *args, "--set", "bogus_key=1"]) == 2
    assert "unknown actions config keys" in capsys.readouterr().err


def test_resume_reads_flat_vq_settings_from_the_nested_vq_config(tmp_path, capsys, tiny_game_cache):
    # The conv LAM keeps its VQ settings nested (config.vq.beta); --set still takes the flat vq_* names,
    # and a resume must compare them with the nested values, not report a clash with a missing field.
    args = ["train", "actions", "--run", str(tmp_path / "r"), "--data", DATA, "--preset", "tiny", "--steps", "2",
            "--batch-size", "2", "--set", "vq_beta=0.5"]
    assert main(args) == 0
    assert wmfast.load(str(tmp_path / "r")).lam.config.vq.beta == 0.5
    more = ["--steps", "3", "--resume", "--force"]
    assert main(args + more) == 0
    capsys.readouterr()
    assert main(args[:-1] + ["vq_beta=0.3"] + more) == 2
    assert "--set vq_beta=0.3 but the saved model has vq_beta=0.5" in capsys.readouterr().err


def test_demo_trains_and_writes_gif_and_metrics(tmp_path, tiny_game_cache):
    from wmfast.demo import run_demo

    out = tmp_path / "demo"
    summary = run_demo(str(out), data=DATA, train=True, scale=0.002, episodes=2, horizon=2, steps=2, progress=False)
    assert (out / "rollout.gif").stat().st_size > 0
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("tokenizer_psnr", "psnr_teacher_forced", "psnr_autoregressive", "controllability_gap"):
        assert key in saved and saved[key] == saved[key]          # present and not NaN
    assert summary["run"] == str(out / "run")
