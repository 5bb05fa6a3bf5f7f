"""`wmfast viz attention` writes every picture, the JSON and the page; `wmfast bench viz`'s
feature-absent build is the same code without the capture check."""
import inspect
import json
import os

import pytest
import torch
from PIL import Image

from wmfast.cli import main
from wmfast.data import write_dataset
from wmfast.data.games import play_episode
from wmfast.train.recipes import PRETRAINED_DIR

MAZE = os.path.join(PRETRAINED_DIR, "maze")


@pytest.fixture(scope="module")
def maze_h5(tmp_path_factory):
    frames, actions, _ = play_episode("maze", 7, size=32, seed=3)
    return write_dataset(tmp_path_factory.mktemp("viz") / "maze.h5", frames)


def check_report(out, expected_calls, heads):
    for f in ("index.html", "attn_entropy.json", "attn_entropy_summary.png", "input_frames.png"):
        assert os.path.isfile(os.path.join(out, f)), f
    report = json.load(open(os.path.join(out, "attn_entropy.json")))
    calls = report["calls"]
    assert sorted(calls) == sorted(expected_calls)
    page = open(os.path.join(out, "index.html")).read()
    for name, c in calls.items():
        assert len(c["entropy_nats"]) == heads
        assert all(0 <= e <= c["max_entropy_nats"] + 1e-5 for e in c["entropy_nats"])
        pics = [os.path.join("maps", name + ".png")]
        if c["kind"] in ("space", "pair"):
            pics.append(os.path.join("overlay", name + ".png"))
        for pic in pics:
            Image.open(os.path.join(out, pic)).verify()
            assert f"src='{pic}'" in page, pic
    return report


def test_shipped_model(maze_h5, tmp_path):
    import wmfast
    from wmfast.viz import attention_modules

    out = str(tmp_path / "att")
    assert main(["viz", "attention", "--run", MAZE, "--data", maze_h5, "--step", "2", "--query", "3,4",
                 "--out", out]) == 0
    world = wmfast.load(MAZE)
    names = list(attention_modules(world))
    n_modules = sum(isinstance(m, torch.nn.Module) and type(m).__name__ == "Attention"
                    for model in world.modules() for m in model.modules())
    # the frame-wise tokenizer's encoder and decoder: 2 blocks x spatial each; the dynamics: 2 blocks x
    # (spatial, temporal); the conv LAM has none
    tok, dyn = world.tokenizer.config, world.dynamics.config
    assert not tok.temporal_attention and tok.num_blocks == dyn.num_blocks == 2
    assert len(names) == n_modules == 2 * 2 + 2 * 2 == 8
    assert sum(".temporal" in n for n in names) == 2 and all(n.startswith("dynamics.") for n in names if ".temporal" in n)
    report = check_report(out, names, heads=4)
    assert report["settings"]["step"] == 2 and report["settings"]["query_patch"] == 3 * 8 + 4


def test_random_preset_with_windowed_head(maze_h5, tmp_path, capsys):
    out = str(tmp_path / "att")
    assert main(["viz", "attention", "--preset", "tiny", "--set", "use_windowed_attention=true",
                 "--data", maze_h5, "--frames", "3", "--out", out]) == 0
    report = check_report(out, [n for n in json.load(open(os.path.join(out, "attn_entropy.json")))["calls"]], 4)
    assert report["calls"]["lam.encoder.window_head"]["num_keys"] == 2 * 16
    assert len(report["calls"]) == 11                     # 5 STTs x 1 block x 2 + the window head
    assert "index.html" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["viz", "attention"], "--run DIR"),
    (["viz", "attention", "--run", MAZE, "--query", "64"], "out of range"),
    (["viz", "attention", "--preset", "huge"], "unknown preset"),
    (["viz", "attention", "--run", MAZE, "--step", "9"], "out of range"),
])
def test_bad_input(argv, message, maze_h5, tmp_path, capsys):
    assert main(argv + ["--data", maze_h5, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_feature_absent_build_is_the_same_code_without_the_check():
    from wmfast.bench.viz import FeatureAbsent, without_capture
    from wmfast.models.lam import WindowedActionHead
    from wmfast.nn.transformer import Attention

    for cls in (Attention, WindowedActionHead):
        stripped = without_capture(cls.forward)
        assert "_capture" in cls.forward.__code__.co_names
        assert "_capture" not in stripped.__code__.co_names
        assert inspect.signature(stripped) == inspect.signature(cls.forward)
    attn, head = Attention(16, 2, "time").eval(), WindowedActionHead(16, 2, 3).eval()
    x = torch.randn(1, 3, 4, 16)
    want = attn(x), head(x)
    absent = FeatureAbsent()
    with absent:
        assert Attention.forward is absent.stripped[Attention]
        got = attn(x), head(x)
    assert Attention.forward is not absent.stripped[Attention]
    assert all(torch.equal(a, b) for a, b in zip(got, want))
