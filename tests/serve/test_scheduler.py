"""The batching scheduler without a network: steps of concurrent players share World.step calls,
each player's frames equal its own World's, and a failing step costs only the requests in it."""
import asyncio

import numpy as np
import pytest
import torch

from wmfast import World, WmfastError
from wmfast.rollout.shapes import random_world_model
from wmfast.serve.scheduler import Player, Scheduler

from serve_helpers import SIZES


def contexts(n, seed=0):
    g = np.random.default_rng(seed)
    return [g.integers(0, 256, (SIZES["context_length"], 16, 16, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def model():
    return random_world_model(**SIZES, seed=2)


def run(coro):
    return asyncio.run(coro)


def test_players_share_ticks_and_keep_their_own_state(model):
    plans = [[1, 2, 3, 4, 5], [7, 7, 0, 1, 2], [3, 3, 3, 6, 6], [0, 5, 2, 2, 1]]
    starts = contexts(4)

    async def main():
        sched = Scheduler(lambda name, mode, steps: World(model, device="cpu", mode=mode, steps=steps), gather_ms=50)
        sched.start()
        players = [Player() for _ in plans]

        async def play(p, ctx, actions):
            await sched.start_player(p, "m", "fast", 2, ctx)
            return [await sched.step(p, a) for a in actions]

        out = await asyncio.gather(*(play(p, c, a) for p, c, a in zip(players, starts, plans)))
        await sched.stop()
        return out, sched

    out, sched = run(main())
    for frames, ctx, actions in zip(out, starts, plans):
        ref = World(model, device="cpu", mode="fast", steps=2).reset(torch.from_numpy(ctx[None]))
        ref = ref.rollout(torch.tensor([actions]), as_uint8=True)[0].numpy()
        assert np.abs(np.stack(frames).astype(int) - ref.astype(int)).max() <= 1
    assert sched.requests == 4 * 6 and sched.ticks < sched.requests and max(sched.batch_sizes) == 4


def test_unbatched_gives_each_player_a_world_of_its_own(model):
    async def main():
        sched = Scheduler(lambda name, mode, steps: World(model, device="cpu", mode=mode, steps=steps),
                          batching=False)
        sched.start()
        players = [Player() for _ in range(3)]
        for p, ctx in zip(players, contexts(3)):
            await sched.start_player(p, "m", "fast", 2, ctx)
        await asyncio.gather(*(sched.step(p, 1) for p in players))
        groups = len(sched.groups)
        for p in players:
            sched.leave(p)
        await sched.stop()
        return groups, sched

    groups, sched = run(main())
    assert groups == 3 and set(sched.batch_sizes) == {1} and not sched.groups


def test_a_failing_step_fails_only_its_tick(model):
    async def main():
        sched = Scheduler(lambda name, mode, steps: World(model, device="cpu", mode=mode, steps=steps))
        sched.start()
        a, b = Player(), Player()
        ca, cb = contexts(2)
        await sched.start_player(a, "m", "fast", 2, ca)
        await sched.start_player(b, "other", "fast", 2, cb)          # another group
        world = a.group.world
        real_step = world.step
        world.step = lambda *args, **kw: (_ for _ in ()).throw(RuntimeError("boom"))
        with pytest.raises(RuntimeError, match="boom"):
            await sched.step(a, 1)
        world.step = real_step
        assert (await sched.step(b, 1)).shape == (16, 16, 3)        # the other group goes on
        with pytest.raises(WmfastError, match="start again"):       # a's state went with the failed tick
            await sched.step(a, 1)
        await sched.start_player(a, "m", "fast", 2, ca)
        frame = await sched.step(a, 1)
        await sched.stop()
        return frame

    assert run(main()).shape == (16, 16, 3)
