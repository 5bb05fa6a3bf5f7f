"""The README, checked against what the code does: its Python snippet runs (on a batch of 2, on
a run with the demo's shapes but random weights), every command of its table exists with the
options it shows, and the table's commands run end to end with tiny settings."""
import argparse
import io
import os
import re
import shlex
from pathlib import Path

import pytest
import torch

from wmfast.checkpoint import STAGES, save_model
from wmfast.cli import build_parser, main
from wmfast.train import TrainConfig
from wmfast.train.trainer import stage_config

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def python_snippet() -> str:
    section = README.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def table_commands() -> list:
    """The first cell of every row of the command-line table, unescaped (`\\|` -> `|`)."""
    section = README.split("## Command line", 1)[1].split("\n## ", 1)[0]
    cells = [row.split(" | ")[0] for row in section.splitlines() if row.startswith("| `wmfast")]
    return [c.replace("\\|", "|") for cell in cells for c in re.findall(r"`(wmfast [^`]*)`", cell)]


def subparser(parser, words):
    """The parser of `wmfast a b ...` for the leading words that name sub-commands."""
    import argparse

    p = parser
    for w in words:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or w.strip("{}") .split(",")[0] not in subs[0].choices:
            break
        p = subs[0].choices[w.strip("{}").split(",")[0]]
    return p


def test_every_table_command_exists_with_the_options_it_shows():
    parser = build_parser()
    commands = table_commands()
    assert len(commands) >= 10, commands
    for cmd in commands:
        words = cmd.split()[1:]
        p = subparser(parser, words)
        assert p is not parser, cmd
        # a deprecated spelling (hidden from --help) does not count: the README shows the current one
        options = {o for a in p._actions if a.help != argparse.SUPPRESS for o in a.option_strings}
        for opt in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", cmd):
            assert opt in options, f"README shows `{opt}` for `{p.prog}`, which has {sorted(options)}"
        for group in re.findall(r"\{([a-z,]+)\}", cmd):      # {tokenizer,actions,dynamics}, {vq,attention,...}
            for choice in group.split(","):
                assert subparser(parser, words[:words.index("{" + group + "}")] + [choice]).prog.endswith(choice) \
                    or any(choice in (a.choices or []) for a in p._actions), (cmd, choice)


@pytest.fixture(scope="module")
def demo_shaped_run(tmp_path_factory):
    """A run with the shipped demo model's configs (preset small) and random weights."""
    run = tmp_path_factory.mktemp("readme") / "runs" / "pong"
    train = TrainConfig(preset="small")
    for stage in STAGES:
        save_model(STAGES[stage][0](stage_config(stage, str(run), train, {})), run / stage)
    return run


def test_python_snippet_runs_on_a_batch_of_two(demo_shaped_run, monkeypatch):
    monkeypatch.chdir(demo_shaped_run.parents[1])
    frames = torch.rand(2, 4, 3, 32, 32) * 2 - 1
    scope = {"frames": frames}
    exec(compile(python_snippet(), "README.md", "exec"), scope)
    B, T, P = scope["idx"].shape
    assert (B, T) == (2, 4) and scope["logits"].shape[:3] == (2, 4, P)
    assert scope["out"].shape[:2] == (2, 4)
    assert scope["frame"].shape == (2, 3, 32, 32)


def test_table_commands_run_with_tiny_settings(tmp_path, monkeypatch, tiny_game_cache, capsys):
    """data game -> data info -> train (three stages, the later ones without --data) -> rollout ->
    play, each as the table writes it, with tiny sizes added."""
    monkeypatch.chdir(tmp_path)
    tiny = ["--preset", "tiny", "--steps", "2", "--batch-size", "2", "--warmup-steps", "1"]
    runs = [
        "wmfast data game --game pong --episodes 3 --steps 12 --size 32 --out pong.h5",
        "wmfast data info pong.h5 --preview p.png",
        "wmfast train tokenizer --run runs/pong --data pong.h5",
        "wmfast train actions --run runs/pong",
        "wmfast train dynamics --run runs/pong",
        "wmfast rollout --run runs/pong --actions 0,1,1,2 --out rollout.gif --steps 2",
    ]
    shown = " ".join(table_commands())
    for cmd in runs:
        argv = shlex.split(cmd)[1:]
        assert f"wmfast {argv[0]}" in shown, cmd
        code = main(argv + (tiny if argv[0] == "train" else []))
        assert code == 0, (cmd, capsys.readouterr().err[-2000:])
    for f in ("pong.h5", "p.png", "rollout.gif", "runs/pong/dynamics/model.safetensors"):
        assert os.path.isfile(f), f
    # the later stages used the tokenizer's data (the run remembers it)
    assert all(open(f"runs/pong/{s}/data.json").read().count(str(tmp_path / "pong.h5")) for s in STAGES)
    monkeypatch.setattr("sys.stdin", io.StringIO("01rq"))
    assert main(["play", "--run", "runs/pong", "--steps", "1"]) == 0
    assert "played 2 frames" in capsys.readouterr().out


def footage_to_agent_commands() -> list:
    section = README.split("**From footage to an agent in the real game**", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.startswith("wmfast ")]


def tiny_settings(argv) -> list:
    """Options appended to a command of the block (argparse keeps an option's last value)."""
    if argv[0] == "data":
        return ["--episodes", "4", "--episode-steps", "40", "--size", "32"]
    if argv[:2] in (["train", "action-map"], ["train", "reward"]):
        return ["--steps", "2"]
    if argv[0] == "train":
        return ["--preset", "tiny", "--steps", "2", "--batch-size", "2", "--warmup-steps", "1"]
    return {"imagine": ["--iterations", "1", "--batch-size", "2", "--horizon", "2"],
            "eval": ["--episodes", "1", "--episode-steps", "5"]}[argv[1]]


def test_footage_to_agent_block_runs_in_order_with_tiny_settings(tmp_path, monkeypatch, capsys):
    """The README's whole path, footage -> world model -> action map -> reward -> agent -> real game,
    each command as written with tiny sizes appended; every stage leaves its files."""
    monkeypatch.chdir(tmp_path)
    commands = footage_to_agent_commands()
    assert [c.split()[1:3] for c in commands][-2:] == [["policy", "imagine"], ["policy", "eval"]]
    for cmd in commands:
        argv = shlex.split(cmd)[1:]
        code = main(argv + tiny_settings(argv))
        assert code == 0, (cmd, capsys.readouterr().err[-2000:])
        out = capsys.readouterr().out
    for f in ("maze.h5", "runs/maze/dynamics/model.safetensors", "runs/maze/action_map.json",
              "runs/maze/reward/model.safetensors", "runs/agent/model.safetensors"):
        assert os.path.isfile(f), f
    assert "coins_per_100" in out and "| random |" in out and "| scripted |" in out   # the real game, beside baselines
