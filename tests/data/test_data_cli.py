"""`wmfast data ...` commands end to end on tiny inputs."""
import json

import imageio.v3 as iio
import numpy as np
import pytest

from wmfast.cli import main
from wmfast.data import load_dataset
from wmfast.data.frames import resize_uint8


def test_data_game(tmp_path, capsys):
    out = tmp_path / "maze.h5"
    assert main(["data", "game", "--game", "maze", "--episodes", "2", "--steps", "9", "--size", "24",
                 "--out", str(out)]) == 0
    ds = load_dataset(out)
    assert ds.frames.shape == (20, 24, 24, 3) and ds.meta["game"] == "maze"
    assert main(["data", "info", str(out), "--preview", str(tmp_path / "p.png")]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["frames"] == 20 and info["episodes"] == 2 and sum(info["action_counts"].values()) == 18
    grid = iio.imread(tmp_path / "p.png")
    assert grid.shape == (2 * 66, 8 * 66, 3)  # 2 episodes x 8 frames of 64 px with 1 px borders
    assert np.array_equal(grid[1:65, 1:65], resize_uint8(ds.frames[:1], 64)[0])


def test_data_atari(tmp_path):
    pytest.importorskip("ale_py")
    out = tmp_path / "pong.h5"
    assert main(["data", "atari", "--game", "Pong", "--episodes", "1", "--max-steps", "12", "--size", "32",
                 "--frameskip", "2", "--policy", "random", "--seed", "4", "--out", str(out)]) == 0
    ds = load_dataset(out)
    assert ds.frames.shape == (13, 32, 32, 3) and ds.meta["frameskip"] == 2 and ds.meta["policy"] == "random"


def test_data_convert(tmp_path):
    import h5py

    with h5py.File(tmp_path / "tw.h5", "w") as f:
        f.create_dataset("frames", data=np.full((5, 16, 16, 3), 9, np.uint8))
    assert main(["data", "convert", str(tmp_path / "tw.h5"), "--size", "8", "--out", str(tmp_path / "o.h5")]) == 0
    ds = load_dataset(tmp_path / "o.h5")
    assert ds.frames.shape == (5, 8, 8, 3) and (ds.frames == 9).all()


@pytest.mark.parametrize("argv, message", [
    (["data", "atari", "--game", "Pongg", "--out", "x.h5"], "did you mean pong"),
    (["data", "atari", "--game", "Pong", "--size", "3", "--out", "x.h5"], "size must be"),
    (["data", "game", "--game", "chess", "--out", "x.h5"], "unknown game 'chess'"),
    (["data", "info", "missing.h5"], "dataset not found"),
])
def test_bad_input_exits_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
