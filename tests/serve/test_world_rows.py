"""World.take_rows / put_rows: a row taken out of one batch and put into another (any position,
any partner rows) continues exactly as if its World had stepped it alone."""
import pytest
import torch

from wmfast import World, WmfastError
from wmfast.rollout.shapes import random_world_model

SIZES = dict(frame_size=16, patch_size=4, embed_dim=32, num_heads=2, hidden_dim=64, num_blocks=2,
             latent_dim=3, num_bins=4, n_actions=4, context_length=3)


def clips(batch, count, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, count, 16, 16, 3), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("mode,stream,context,temporal", [("fast", True, 3, True), ("fast", True, 1, True),
                                                          ("fast", False, 3, True), ("fast", False, 3, False),
                                                          ("fast", True, 3, False), ("compat", False, 3, True)])
def test_rows_regrouped_match_solo_rollouts(mode, stream, context, temporal):
    model = random_world_model(**SIZES, seed=3, temporal_tokenizer=temporal)
    world = World(model, device="cpu", mode=mode, steps=3, stream=stream)
    starts, actions = clips(3, context, seed=1), torch.tensor([[0, 1, 2, 3, 1, 0], [3, 3, 1, 0, 2, 2], [1, 2, 0, 0, 3, 1]])
    # Reference: each player alone in its own World (batch 1).
    solo = [World(model, device="cpu", mode=mode, steps=3, stream=stream).reset(starts[i:i + 1]).rollout(
        actions[i:i + 1], as_uint8=True)[0] for i in range(3)]

    # Shared World: reset all three, then step in changing groups and orders, rows kept outside.
    rows = world.reset(starts).take_rows()
    done = [[] for _ in range(3)]
    schedule = [[0, 1, 2], [2, 0], [1], [1, 2, 0], [0, 1, 2], [2, 1], [0], [0, 1, 2], [2, 0, 1], [1, 0]]
    for group in schedule:
        group = [p for p in group if len(done[p]) < actions.shape[1]]
        if not group:
            continue
        world.put_rows([rows[p] for p in group])
        out = world.step(torch.stack([actions[p, len(done[p])] for p in group]), as_uint8=True)
        for p, row, frame in zip(group, world.take_rows(), out):
            rows[p] = row
            done[p].append(frame)
    for p in range(3):
        got = torch.stack(done[p])
        assert got.shape == solo[p].shape
        # Same tokens -> same frames up to float noise of a different batch size.
        assert (got.int() - solo[p].int()).abs().max() <= 1


def test_rows_are_independent_copies():
    model = random_world_model(**SIZES, seed=0)
    world = World(model, device="cpu", mode="fast", steps=2, stream=True)
    rows = world.reset(clips(2, 3, seed=0)).take_rows()
    before = [k.clone() for k, _ in rows[0].state["dyn"][2]]
    world.put_rows([rows[1]])
    world.step(torch.tensor([1]))
    world.step(torch.tensor([2]))
    assert all(torch.equal(a, k) for a, (k, _) in zip(before, rows[0].state["dyn"][2]))


def test_put_rows_rejects_mixed_or_foreign_rows():
    model = random_world_model(**SIZES, seed=0)
    fast, compat = World(model, device="cpu", mode="fast", steps=2), World(model, device="cpu", mode="compat", steps=2)
    full = fast.reset(clips(1, 3, seed=0)).take_rows()
    partial = fast.reset(clips(1, 1, seed=0)).take_rows()
    with pytest.raises(WmfastError, match="different keys"):
        fast.put_rows(full + partial)
    with pytest.raises(WmfastError, match="mode, stream"):
        compat.put_rows(full)
    with pytest.raises(WmfastError, match="non-empty"):
        fast.put_rows([])
    with pytest.raises(WmfastError, match="reset"):
        World(model, device="cpu").take_rows()
