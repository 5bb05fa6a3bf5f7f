"""Atari (ALE) episodes: determinism, shapes, action alignment by emulator replay, clear errors."""
import numpy as np
import pytest

pytest.importorskip("ale_py")

from wmfast.data import load_dataset  # noqa: E402
from wmfast.data.atari import ale_step, generate_atari_dataset, make_ale, rom_id  # noqa: E402
from wmfast.errors import WmfastError  # noqa: E402


@pytest.fixture(scope="module")
def native_pong(tmp_path_factory):
    """Two short Pong episodes at the native 210x160 screen, tracker policy."""
    path = tmp_path_factory.mktemp("atari") / "pong.h5"
    generate_atari_dataset("Pong", 2, size=0, frameskip=4, seed=3, max_steps=30, out=path, progress=False)
    return load_dataset(path)


def test_shapes_dtypes_and_metadata(native_pong):
    ds = native_pong
    assert ds.frames.shape == (62, 210, 160, 3) and ds.frames.dtype == np.uint8
    assert ds.episodes == [(0, 31), (31, 62)]
    assert ds.actions.dtype == np.int64 and ds.actions[30] == -1 and ds.actions[61] == -1
    assert ds.action_names == ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
    assert ds.rewards.dtype == np.float32 and ds.rewards.shape == (62,)
    m = ds.meta
    assert (m["game"], m["frameskip"], m["sticky"], m["policy"], m["seed"]) == ("pong", 4, 0.0, "tracker", 3)


def test_recorded_action_replayed_from_saved_state_gives_next_frame(native_pong):
    """Action t leads from frame t to frame t+1: replay the episode in a fresh emulator, save the
    state at each frame, and check that the stored action (and, at some steps, no other action and
    not the neighbouring steps' actions) reproduces the next frame."""
    ds = native_pong
    ale = make_ale("pong", seed=3)
    acts = ale.getMinimalActionSet()
    for start, end in ds.episodes:
        ale.reset_game()
        assert np.array_equal(ale.getScreenRGB(), ds.frames[start])
        others_differ = shifted_differ = 0
        for t in range(start, end - 1):
            state = ale.cloneState()
            alternatives = {}
            for a in {int(ds.actions[t + 1]), 0, 2, 3} - {int(ds.actions[t]), -1}:
                ale.restoreState(state)
                ale_step(ale, acts[a], 4)
                alternatives[a] = ale.getScreenRGB()
            ale.restoreState(state)
            ale_step(ale, acts[ds.actions[t]], 4)
            assert np.array_equal(ale.getScreenRGB(), ds.frames[t + 1]), f"step {t - start}"
            others_differ += any(not np.array_equal(f, ds.frames[t + 1]) for f in alternatives.values())
            nxt = int(ds.actions[t + 1])
            shifted_differ += nxt in alternatives and not np.array_equal(alternatives[nxt], ds.frames[t + 1])
        # The check has teeth: other actions, and the next step's action, give other frames.
        assert others_differ >= 10 and shifted_differ >= 3


def test_deterministic_by_seed(tmp_path):
    kw = dict(size=32, frameskip=2, policy="random", max_steps=25, progress=False)
    a = load_dataset(generate_atari_dataset("Breakout", 1, seed=1, out=tmp_path / "a.h5", **kw))
    b = load_dataset(generate_atari_dataset("breakout", 1, seed=1, out=tmp_path / "b.h5", **kw))
    c = load_dataset(generate_atari_dataset("Breakout", 1, seed=2, out=tmp_path / "c.h5", **kw))
    assert a.frames.shape == (26, 32, 32, 3) and a.n_actions == 4
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.actions, b.actions)
    assert not np.array_equal(a.actions, c.actions)


def test_game_names():
    assert rom_id("Pong") == "pong" and rom_id("ALE/SpaceInvaders-v5") == "space_invaders"
    with pytest.raises(WmfastError, match="unknown Atari game 'Pongg'; did you mean pong"):
        rom_id("Pongg")


def test_bad_arguments(tmp_path):
    out = tmp_path / "x.h5"
    with pytest.raises(WmfastError, match="size must be 0 \\(native\\) or between 4 and 1024"):
        generate_atari_dataset("Pong", 1, size=2, out=out)
    with pytest.raises(WmfastError, match="size must be an integer"):
        generate_atari_dataset("Pong", 1, size=6.5, out=out)
    with pytest.raises(WmfastError, match="frameskip"):
        generate_atari_dataset("Pong", 1, frameskip=0, out=out)
    with pytest.raises(WmfastError, match="tracker policy plays Pong only"):
        generate_atari_dataset("Breakout", 1, policy="tracker", out=out)
    with pytest.raises(WmfastError, match="unknown Atari game"):
        load_dataset("atari:NotAGame")
    assert not out.exists()
