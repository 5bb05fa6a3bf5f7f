"""The Atari object detector: exact on drawn frames, and close to the console RAM on real ones."""
import numpy as np
import pytest

from wmfast.errors import WmfastError
from wmfast.eval.atari_objects import GAMES, detect_objects, fit_ram_to_pixels, ram_positions


def drawn_pong(paddle_top: int, ball=None) -> np.ndarray:
    """A native Pong field with the player's paddle (4 x 16 px) at paddle_top and a 2 x 4 ball at (x, y)."""
    spec = GAMES["pong"]
    frame = np.empty((210, 160, 3), np.uint8)
    frame[:] = spec["background"]
    frame[paddle_top:paddle_top + 16, 140:144] = spec["colours"]["player"]
    frame[100:116, 16:20] = spec["colours"]["opponent"]
    if ball is not None:
        frame[ball[1]:ball[1] + 4, ball[0]:ball[0] + 2] = spec["colours"]["ball"]
    return frame


def test_drawn_objects_are_found_where_they_were_drawn():
    frames = np.stack([drawn_pong(60, (80, 120)), drawn_pong(150)])
    d = detect_objects(frames, "pong")
    assert d["paddle"] == pytest.approx([68.0, 158.0])
    assert d["balls"].tolist() == [True, False] and np.isnan(d["ball_xy"][1]).all()
    assert d["ball_xy"][0] == pytest.approx([81.0, 122.0])


def test_unknown_game_and_bad_shapes_are_one_line_errors():
    with pytest.raises(WmfastError, match="no object detector"):
        detect_objects(np.zeros((1, 64, 64, 3), np.uint8), "tetris")
    with pytest.raises(WmfastError, match="frames"):
        detect_objects(np.zeros((64, 64, 3), np.uint8), "pong")


@pytest.mark.parametrize("game", ["pong", "breakout"])
def test_detector_follows_the_ram_on_resized_real_frames(game, tmp_path):
    """Fit RAM -> pixels on one recorded episode, check the other: at 64 px the paddle and ball are
    within about a pixel of where the RAM puts them, and a ball is seen about as often as natively."""
    pytest.importorskip("ale_py")
    from wmfast.data import load_dataset
    from wmfast.data.atari import generate_atari_dataset
    from wmfast.data.dataset import read_array
    from wmfast.data.frames import resize_uint8

    path = generate_atari_dataset(game, 2, size=0, seed=2, max_steps=200, out=tmp_path / "a.h5", progress=False)
    ds = load_dataset(path)
    frames, ref = np.asarray(ds.frames[:]), ram_positions(read_array(path, "ram"), game)
    (s0, e0), (s1, e1) = ds.episodes
    native, small = detect_objects(frames, game), detect_objects(resize_uint8(frames, 64), game)
    assert abs(small["balls"].mean() - native["balls"].mean()) < 0.1
    for key, r, d in (("paddle", ref["paddle"], small["paddle"]), ("ball_y", ref["ball_xy"][:, 1], small["ball_xy"][:, 1])):
        scale, offset = fit_ram_to_pixels(r[s0:e0], d[s0:e0])
        err = np.abs(scale * r[s1:e1] + offset - d[s1:e1])
        assert np.median(err[np.isfinite(err)]) < 1.5, key
    moved = np.abs(np.diff(ref["paddle"][s1:e1])).sum()
    assert moved > 20          # the paddle moved: the check is not on a still frame
