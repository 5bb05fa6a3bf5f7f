"""The frame-conditioned action map: what a game action does can depend on the frame (a move into a
wall changes nothing, so the LAM codes it as NOOP), which a lookup table cannot express."""
import shutil

import pytest
import torch

from wmfast import World
from wmfast.checkpoint import load_action_map, save_action_map
from wmfast.models.action_map import FRAME_MAP_WEIGHTS, ActionMap
from wmfast.train.action_map import fit_frame_action_map
from wmfast.checkpoint import save_model
from wmfast.errors import WmfastError
from wmfast.rollout.shapes import random_world_model

SIZES = dict(frame_size=16, patch_size=4, embed_dim=16, num_heads=2, hidden_dim=32, num_blocks=1,
             latent_dim=2, num_bins=4, n_actions=4, context_length=2)


def blocked_game(n: int, seed: int):
    """Toy transitions: 16x16 frames with a bright 'wall' square at a random place; game action 1 is
    coded 2 unless the wall sits in the top half (then the move is blocked: code 0); action 0 is code 0."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.full((n, 3, 16, 16), -0.8)
    rows, cols = torch.randint(0, 14, (n,), generator=g), torch.randint(0, 14, (n,), generator=g)
    for i in range(n):
        frames[i, :, rows[i]:rows[i] + 3, cols[i]:cols[i] + 3] = 0.9
    actions = torch.randint(0, 2, (n,), generator=g)
    codes = torch.where((actions == 1) & (rows >= 7), 2, 0)
    return frames, actions, codes


def test_fit_learns_what_the_frame_decides_and_the_table_cannot():
    frames, actions, codes = blocked_game(600, seed=0)
    net = fit_frame_action_map(frames, actions, codes, num_game_actions=2, num_latents=3, steps=300)
    f2, a2, c2 = blocked_game(300, seed=1)                            # held-out toy transitions
    with torch.no_grad():
        pred = net(f2, a2).argmax(1)
    amap = ActionMap.from_pairs(actions, codes, 2, 3)
    table_acc = (amap.to_latent(a2) == c2).float().mean()
    assert (pred == c2).float().mean() > 0.95 and table_acc < 0.85      # the table is right only for NOOP and half of UP


def test_saved_frame_map_round_trips_and_drives_the_world(tmp_path):
    model = random_world_model(**SIZES)
    run = tmp_path / "run"
    for stage, m in (("tokenizer", model.tokenizer), ("actions", model.lam), ("dynamics", model.dynamics)):
        save_model(m, run / stage)
    frames, actions, codes = blocked_game(200, seed=0)
    amap = ActionMap.from_pairs(actions, codes, 2, 4, action_names=["NOOP", "UP"])
    amap.frame_map = fit_frame_action_map(frames, actions, codes, 2, 4, steps=5)
    save_action_map(amap, run)
    loaded = load_action_map(run)
    f, a, _ = blocked_game(8, seed=2)
    assert torch.equal(loaded.to_latent(a, f), amap.to_latent(a, f))

    context = torch.rand(2, 2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    game = World.load(str(run), mode="compat", steps=2, actions="game").reset(context)
    latent = World.load(str(run), mode="compat", steps=2).reset(context)
    frame = context[:, -1]
    for g in ([1, 0], [1, 1], [0, 1]):
        g = torch.tensor(g)
        k = loaded.to_latent(g, frame)                                 # the code for THIS frame
        frame = game.step(g)
        assert torch.equal(frame, latent.step(k))

    # saving a table-only map removes the stale weights; broken weights are a one-line error
    shutil.copy(run / FRAME_MAP_WEIGHTS, tmp_path / "kept.safetensors")
    save_action_map(ActionMap.from_pairs(actions, codes, 2, 4), run)
    assert not (run / FRAME_MAP_WEIGHTS).exists() and load_action_map(run).frame_map is None
    save_action_map(amap, run)
    (run / FRAME_MAP_WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(WmfastError, match="corrupt safetensors"):
        load_action_map(run)
