"""Atari (ALE) episodes: determinism, shapes, action alignment by emulator replay, clear errors."""
import numpy as np
import pytest

pytest.importorskip("ale_py")

from wmfast.data import load_dataset  # noqa: E402
from wmfast.data.atari import ale_step, emulator_at, generate_atari_dataset, make_ale, rom_id  # noqa: E402
from wmfast.data.dataset import read_array  # noqa: E402
from wmfast.errors import WmfastError  # noqa: E402


@pytest.fixture(scope="module")
def native_pong(tmp_path_factory):
    """Two short Pong episodes at the native 210x160 screen, tracker policy."""
    path = tmp_path_factory.mktemp("atari") / "pong.h5"
    generate_atari_dataset("Pong", 2, size=0, frameskip=4, seed=3, max_steps=30, policy="tracker", out=path,
                           progress=False)
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
                alternatives[a] = ale_step(ale, acts[a], 4)[1]
            ale.restoreState(state)
            assert np.array_equal(ale_step(ale, acts[ds.actions[t]], 4)[1], ds.frames[t + 1]), f"step {t - start}"
            others_differ += any(not np.array_equal(f, ds.frames[t + 1]) for f in alternatives.values())
            nxt = int(ds.actions[t + 1])
            shifted_differ += nxt in alternatives and not np.array_equal(alternatives[nxt], ds.frames[t + 1])
        # The check has teeth: other actions, and the next step's action, give other frames.
        assert others_differ >= 10 and shifted_differ >= 3


def test_a_frame_is_the_max_of_its_steps_last_two_emulator_frames(native_pong):
    ds = native_pong
    ale = make_ale("pong", seed=3)
    ale.reset_game()
    screens = []
    for _ in range(4):
        ale.act(ale.getMinimalActionSet()[ds.actions[0]])
        screens.append(ale.getScreenRGB())
    assert np.array_equal(ds.frames[1], np.maximum(screens[2], screens[3]))


def test_ram_terminals_and_emulator_states_come_back(native_pong):
    """The recorded RAM is the console's at each frame, and emulator_at restores any frame's state:
    from there the recorded action gives the next frame."""
    ds = native_pong
    ram, terminals = read_array(ds.source, "ram"), read_array(ds.source, "terminals")
    assert ram.shape == (62, 128) and ram.dtype == np.uint8 and terminals.shape == (62,) and not terminals.any()
    assert read_array(ds.source, "no such array") is None
    for t in (0, 17, 40):
        ale, acts = emulator_at(ds, t)
        assert np.array_equal(ale.getRAM(), ram[t])
        assert np.array_equal(ale_step(ale, acts[ds.actions[t]], 4)[1], ds.frames[t + 1])
        assert np.array_equal(ale.getRAM(), ram[t + 1])
    assert len(set(map(bytes, ram[:30]))) > 20          # the RAM changes as the game goes on
    with pytest.raises(WmfastError, match="outside"):
        emulator_at(ds, 62)


def test_default_policy_draws_every_action_anew(tmp_path):
    ds = load_dataset(generate_atari_dataset("Pong", 1, size=32, max_steps=200, seed=0, out=tmp_path / "p.h5",
                                             progress=False))
    assert (ds.meta["policy"], ds.meta["policy_repeat"], ds.meta["atari_version"]) == ("random", 0.0, 2)
    a = ds.actions[:-1]
    same = float((a[1:] == a[:-1]).mean())
    assert abs(same - 1 / len(ds.action_names)) < 0.1    # i.i.d. over 6 actions: a repeat 1/6 of the time
    ale, _ = emulator_at(ds, 150)                        # resized frames are checked through the same resize


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


def test_direction_keys_play_what_moves_the_paddle_that_way():
    from wmfast.data.atari import key_actions

    pong = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
    assert key_actions(pong, "pong") == {"UP": 2, "DOWN": 3, "FIRE": 1}      # ALE's Pong: RIGHT moves up
    assert key_actions(["NOOP", "FIRE", "RIGHT", "LEFT"], "breakout") == {"RIGHT": 2, "LEFT": 3, "FIRE": 1}
    assert key_actions(["noop", "up", "down", "left", "right"]) == {"UP": 1, "DOWN": 2, "LEFT": 3, "RIGHT": 4}
