"""Bad input, table driven: every case exits with code 2 (CLI) or raises the named exception
(Python API), with one line naming the problem, no traceback, and no file created or changed.
Then the behaviours around them: a run remembers its data, --resume refuses what does not
match, Ctrl-C says how to resume, the help explains itself."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import wmfast
from wmfast.checkpoint import STAGES, save_model
from wmfast.cli import build_parser, main
from wmfast.errors import WmfastError
from wmfast.models import DynamicsConfig, LatentActionConfig, TokenizerConfig
from wmfast.train import TrainConfig, train_stage
from wmfast.train.trainer import stage_config

DATA = "game:pong:4"


def tiny(steps=4, **kw):
    return TrainConfig(steps=steps, batch_size=2, preset="tiny", log_every=2, save_every=2, warmup_steps=1,
                       progress=False, **kw)


@pytest.fixture(scope="module")
def root(tmp_path_factory, tiny_game_cache):
    """runs/full: all three stages, random weights (no data record); runs/trained: a tokenizer
    trained on DATA and stopped at step 2 of 4 (resumable); runs/bad-*: broken config.json."""
    root = tmp_path_factory.mktemp("bad-inputs")
    full = root / "runs" / "full"
    for stage in STAGES:
        cfg = stage_config(stage, str(full), tiny(), {})
        save_model(STAGES[stage][0](cfg), full / stage)

    def stop_at_2(step, model):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_stage("tokenizer", str(root / "runs" / "trained"), DATA, tiny(), callback=stop_at_2)
    for name, value in (("str", "32"), ("float", 1.5), ("bool", True), ("list", None)):
        bad = root / "runs" / f"bad-{name}"
        shutil.copytree(full, bad)
        path = bad / "tokenizer" / "config.json"
        cfg = json.loads(path.read_text())
        cfg["embed_dim"] = value
        path.write_text(json.dumps([1, 2] if value is None else cfg))
    return root


def snapshot(root) -> dict:
    """Every path under root with its size, mtime and mode: a created or changed file shows."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(folder, name)
            st = os.stat(p)
            out[p] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return out


R = "runs/full"
T = "runs/trained"
NEW = "runs/new"
TRAIN = ["train", "tokenizer", "--run", NEW, "--preset", "tiny", "--steps", "2", "--data", DATA]
RESUME = ["train", "tokenizer", "--run", T, "--resume"]
ROLL = ["rollout", "--run", R, "--actions", "0,1", "--out", "o.gif", "--data", DATA]

CLI_CASES = {
    # config.json of the wrong type or shape
    "config field a string": (["rollout", "--run", "runs/bad-str", "--actions", "0"], "embed_dim must be an integer"),
    "config field a float": (["rollout", "--run", "runs/bad-float", "--actions", "0"], "got 1.5"),
    "config field a bool": (["rollout", "--run", "runs/bad-bool", "--actions", "0"], "got True"),
    "config not an object": (["rollout", "--run", "runs/bad-list", "--actions", "0"], "expected a JSON object"),
    # --set
    "--set not a number": (TRAIN + ["--set", "embed_dim=abc"], "--set embed_dim must be an integer >= 1, got 'abc'"),
    "--set patch_size=7": (TRAIN + ["--set", "patch_size=7"], "must be divisible by patch_size 7"),
    "--set keeps the stage": (["train", "--set", "a=1", "tokenizer", "--run", NEW], "unknown tokenizer config keys ['a']"),
    "--set without =": (TRAIN + ["--set", "embed_dim"], "--set expects key=value"),
    "--set zero heads": (TRAIN + ["--set", "num_heads=0"], "num_heads must be an integer >= 1"),
    "--set heads not dividing": (TRAIN + ["--set", "num_heads=3"], "divisible by num_heads 3"),
    # train options
    "--lr -1": (TRAIN + ["--lr", "-1"], "--lr: must be a number > 0"),
    "--lr nan": (TRAIN + ["--lr", "nan"], "--lr: must be a number > 0"),
    "--device banana": (TRAIN + ["--device", "banana"], "--device: must be 'auto', 'cpu'"),
    "--steps 0": (TRAIN + ["--steps", "0"], "--steps: must be an integer >= 1"),
    "--batch-size 0": (TRAIN + ["--batch-size", "0"], "--batch-size: must be an integer >= 1"),
    "--clip-len 1": (TRAIN + ["--clip-len", "1"], "--clip-len: must be an integer >= 2"),
    "--seed -1": (TRAIN + ["--seed", "-1"], "--seed: must be an integer >= 0"),
    "--preset huge": (TRAIN + ["--preset", "huge"], "invalid choice: 'huge'"),
    "--force alone": (TRAIN + ["--force"], "--force only applies with --resume"),
    "unknown game": (["train", "tokenizer", "--run", NEW, "--data", "game:tetris"], "unknown game 'tetris'"),
    "missing dataset": (["train", "tokenizer", "--run", NEW, "--data", "nope.h5"], "nope.h5"),
    "dynamics first": (["train", "dynamics", "--run", NEW], "needs a trained tokenizer and actions"),
    "unknown augmentation": (["train", "tokenizer", "--run", NEW, "--set", "augment=blur"],
                             "unknown footage variant 'blur'"),
    "eval unknown footage": (["eval", "--run", R, "--footage", "jpeg40,blur"], "unknown footage variant 'blur'"),
    # --resume must match the saved run
    "resume nothing": (["train", "tokenizer", "--run", NEW, "--resume"], "nothing to resume"),
    "resume other --steps": (RESUME + ["--steps", "9"], "steps=9 but the run was started with steps=4"),
    "resume other --lr": (RESUME + ["--lr", "0.5"], "lr=0.5 but the run was started with lr=0.001"),
    "resume other --data": (RESUME + ["--data", "game:maze:4"], "trained on game:pong:4, not --data game:maze:4"),
    "resume other --set": (RESUME + ["--set", "embed_dim=64"], "--set embed_dim=64 but the saved model has embed_dim=32"),
    "resume other --preset": (RESUME + ["--preset", "small"], "preset='small' but the run was started with preset='tiny'"),
    # rollout / play
    "rollout --out .txt": (ROLL[:-4] + ["--out", "x.txt"], "--out: must end in .gif or .mp4"),
    "rollout empty action": (["rollout", "--run", R, "--actions", "0,,1"], "--actions has an empty item"),
    "rollout action range": (ROLL[:4] + ["0,99"] + ROLL[5:], "--actions must be ids in [0, 4)"),
    "rollout action text": (ROLL[:4] + ["0,x"] + ROLL[5:], "no action_map.json"),   # names are game actions
    "rollout --steps 0": (ROLL + ["--steps", "0"], "--steps: must be an integer >= 1"),
    "rollout --episode -1": (ROLL + ["--episode", "-1"], "--episode: must be an integer >= 0"),
    "rollout --episode 99": (ROLL + ["--episode", "99"], "episode 99 out of range"),
    "rollout --temperature -1": (ROLL + ["--temperature", "-1"], "--temperature: must be a number >= 0"),
    "rollout --device banana": (ROLL + ["--device", "banana"], "--device"),
    "rollout onnx not exported": (ROLL + ["--backend", "onnx"], "wmfast export"),
    "rollout no dynamics": (["rollout", "--run", T, "--actions", "0"], "missing stage(s)"),
    "rollout no run": (["rollout", "--run", "runs/none", "--actions", "0"], "no such run directory"),
    "play --out .txt": (["play", "--run", R, "--out", "x.txt"], "--out: must end in .png or .gif or .mp4"),
    # export / parity
    "export partial run": (["export", "--run", T], "has no actions or dynamics stage"),
    "export --batch 0": (["export", "--run", R, "--batch", "0"], "--batch: must be 'dynamic' or an integer >= 1"),
    "parity --batch 0": (["parity", "--run", R, "--batch", "0"], "--batch: must be an integer >= 1"),
    "parity no export": (["parity", "--run", R], "no such ONNX directory"),
    # demo
    "demo unknown game": (["demo", "--data", "game:tetris", "--out", "d"], "unknown game 'tetris'"),
    "demo --episodes 0": (["demo", "--episodes", "0", "--out", "d"], "--episodes: must be an integer >= 1"),
    "demo --scale 0": (["demo", "--scale", "0", "--out", "d"], "--scale: must be a number > 0"),
    # data
    "data --out .txt": (["data", "game", "--out", "x.txt"], "--out: must end in .h5 or .hdf5"),
    "data --episodes 0": (["data", "game", "--episodes", "0", "--out", "x.h5"], "--episodes: must be an integer >= 1"),
    "data info missing": (["data", "info", "nope.h5"], "nope.h5"),
    # the command line itself
    "unknown command": (["bogus"], "invalid choice: 'bogus'"),
    "missing --run": (["train", "tokenizer"], "required: --run"),
    "abbreviated option": (TRAIN + ["--ste", "3"], "unrecognized arguments: --ste"),
    "extra positional": (TRAIN + ["stray"], "unrecognized arguments: stray"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_bad_input_is_one_line_exit_2_nothing_written(case, root, capsys, monkeypatch):
    argv, expected = CLI_CASES[case]
    monkeypatch.chdir(root)
    before = snapshot(root)
    try:
        code = main(list(argv))
    except SystemExit as e:        # argparse
        code = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert expected in lines[0], lines[0]
    assert snapshot(root) == before, "files were created or changed"


def _model(root):
    return wmfast.load(str(root / R))


def _inputs(m, B=2):
    frames = torch.rand(B, 4, 3, 32, 32) * 2 - 1
    return m.tokenizer.latents(m.tokenizer.encode(frames)), m.lam.encode(frames)


def _nan_step(world):
    return world.reset(torch.zeros(1, 4, 3, 32, 32)).step(torch.full((1, world.A), float("nan")))


def _nan(x):
    x = x.clone()
    x.view(-1)[0] = float("nan")
    return x


API_CASES = {
    "config str field": (lambda r: TokenizerConfig(embed_dim="32"), "TokenizerConfig.embed_dim must be an integer"),
    "config float field": (lambda r: TokenizerConfig(embed_dim=1.5), "got 1.5"),
    "config bool field": (lambda r: TokenizerConfig(embed_dim=True), "got True"),
    "config frame/patch": (lambda r: TokenizerConfig(frame_size=64, patch_size=7), "divisible by patch_size 7"),
    "config not an object": (lambda r: TokenizerConfig.from_dict([1, 2]), "must be a JSON object"),
    "config unknown key": (lambda r: DynamicsConfig.from_dict({"bogus": 1}), "unknown DynamicsConfig keys"),
    "config n_actions": (lambda r: LatentActionConfig(n_actions=6), "power of 2"),
    "train steps 0": (lambda r: TrainConfig(steps=0), "TrainConfig.steps must be an integer >= 1"),
    "train lr nan": (lambda r: TrainConfig(lr=float("nan")), "finite"),
    "train device": (lambda r: TrainConfig(device="banana"), "TrainConfig.device"),
    "dynamics NaN latents": (lambda r: _model(r).dynamics(_nan(_inputs(_model(r))[0]), _inputs(_model(r))[1]),
                             "latents contains NaN or Inf"),
    "dynamics Inf actions": (lambda r: _model(r).dynamics(_inputs(_model(r))[0], _inputs(_model(r))[1] * float("inf")),
                             "actions contains NaN or Inf"),
    "dynamics batch mismatch": (lambda r: _model(r).dynamics(_inputs(_model(r))[0], _inputs(_model(r), 1)[1]),
                                "batch sizes must match, got latents 2, actions 1"),
    "generate batch mismatch": (lambda r: _model(r).dynamics.generate(_inputs(_model(r))[0][:, :3],
                                                                      _inputs(_model(r), 1)[1]), "actions must be [B=2"),
    "decode NaN": (lambda r: _model(r).tokenizer.decode(_nan(_inputs(_model(r))[0])), "latents contains NaN"),
    "lam indices NaN": (lambda r: _model(r).lam.indices(_nan(_inputs(_model(r))[1])), "action latents contains NaN"),
    "encode NaN frames": (lambda r: _model(r).tokenizer.encode(_nan(torch.zeros(1, 2, 3, 32, 32))), "NaN or Inf"),
    "onnx not exported": (lambda r: wmfast.World.load(str(r / R), backend="onnx"), "wmfast export"),
    "world device": (lambda r: wmfast.World.load(str(r / R), device="banana"), "device must be"),
    "world NaN action latents": (lambda r: _nan_step(wmfast.World.load(str(r / R))), "NaN"),
    "world temperature nan": (lambda r: wmfast.World.load(str(r / R), temperature=float("nan")), "temperature"),
    "world temperature str": (lambda r: wmfast.World.load(str(r / R), temperature="hot"), "temperature"),
    "world batch mismatch": (lambda r: wmfast.World.load(str(r / R)).reset(torch.zeros(2, 4, 3, 32, 32)).step(
        torch.tensor([1])), "batch"),
    "generate temperature nan": (lambda r: _model(r).dynamics.generate(_inputs(_model(r))[0][:, :3],
                                                                       _inputs(_model(r))[1], temperature=float("nan")),
                                 "temperature must be a number >= 0"),
    "generate steps str": (lambda r: _model(r).dynamics.generate(_inputs(_model(r))[0][:, :3], _inputs(_model(r))[1],
                                                                 steps="2"), "steps must be an integer >= 1"),
    "resume other steps": (lambda r: train_stage("tokenizer", str(r / T), None, tiny(steps=9), resume=True),
                           "--resume --force"),
}


@pytest.mark.parametrize("case", list(API_CASES))
def test_python_bad_input_raises_one_line(case, root):
    fn, expected = API_CASES[case]
    before = snapshot(root)
    with pytest.raises(WmfastError) as e:
        fn(root)
    assert "\n" not in str(e.value) and expected in str(e.value), str(e.value)
    assert snapshot(root) == before


# -- runs remember their data ------------------------------------------------------------------

def test_later_stages_use_the_runs_data_and_say_when_it_changed(tmp_path, tiny_game_cache, capsys):
    from wmfast.data import generate_game_dataset
    from wmfast.run_data import resolve_run_data

    data = str(tmp_path / "pong.h5")
    generate_game_dataset("pong", 3, 12, 32, 0, data)
    run = str(tmp_path / "run")
    train_stage("tokenizer", run, data, tiny(steps=2))
    assert resolve_run_data(run) == data
    args = ["--run", run, "--preset", "tiny", "--steps", "2", "--batch-size", "2", "--warmup-steps", "1"]
    assert main(["train", "actions", *args]) == 0                     # no --data: the tokenizer's file
    assert json.load(open(os.path.join(run, "actions", "data.json")))["data"] == data
    with open(data, "ab") as f:                                       # the file changes afterwards
        f.write(b"\0")
    capsys.readouterr()
    before = snapshot(tmp_path)
    assert main(["train", "dynamics", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "has changed since" in err and "pass --data" in err and len(err.splitlines()) == 1
    assert snapshot(tmp_path) == before
    # Given explicitly, other data is used, with a note naming both.
    assert resolve_run_data(run, "game:pong:4") == "game:pong:4"
    assert "was trained on" in capsys.readouterr().err


def test_ctrl_c_names_the_step_and_the_resume_command_which_then_works(tmp_path, tiny_game_cache, capsys):
    run = str(tmp_path / "r")

    def stop(step, model):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as e:
        train_stage("tokenizer", run, DATA, tiny(steps=5), callback=stop)
    msg = str(e.value)
    assert "step 3 of 5" in msg and f"wmfast train tokenizer --run {run} --resume" in msg
    command = msg.split("resume with: ")[1].split()
    assert main(command[1:]) == 0          # exactly that command: data, preset and schedule from the run
    assert torch.load(os.path.join(run, "tokenizer", "train_state.pt"), weights_only=True)["step"] == 5
    # --force lets a resumed run change what it was started with (here: train further).
    assert main(command[1:] + ["--steps", "6", "--force"]) == 0
    assert json.load(open(os.path.join(run, "tokenizer", "train_config.json")))["steps"] == 6


def test_checkpoint_files_share_one_mode(root):
    folder = root / T / "tokenizer"
    modes = {name: os.stat(folder / name).st_mode & 0o777 for name in ("model.safetensors", "config.json")}
    assert modes["model.safetensors"] == modes["config.json"], modes


# -- help ---------------------------------------------------------------------------------------

def _parsers(parser):
    import argparse

    stack = [parser]
    while stack:
        p = stack.pop()
        yield p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                stack.extend(a.choices.values())


def test_every_option_has_help_and_main_commands_have_examples():
    import argparse

    parser = build_parser()
    for p in _parsers(parser):
        for a in p._actions:
            if not isinstance(a, argparse._SubParsersAction):     # sub-commands have their own help
                assert a.help, f"{p.prog} {a.option_strings or a.dest} has no help"
    for cmd in ("train", "demo", "rollout", "play", "export", "parity", "data game", "import tinyworlds"):
        p = next(p for p in _parsers(parser) if p.prog == f"wmfast {cmd}")
        assert "examples:" in p.epilog and f"wmfast {cmd}" in p.epilog


def test_help_shows_defaults_and_set_does_not_swallow_the_stage(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "optimizer steps for this stage (default: 2000)" in " ".join(out.split())
    a = build_parser().parse_args(["train", "--set", "a=1", "b=2", "tokenizer", "--run", "x", "--set", "c=3"])
    assert a.stage == "tokenizer" and a.set == ["a=1", "b=2", "c=3"]


def test_version_and_a_real_process_exit_code(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith(f"wmfast {wmfast.__version__} (torch ")
    bad = subprocess.run([sys.executable, "-m", "wmfast", "train", "tokenizer", "--run", "x", "--lr", "-1"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
