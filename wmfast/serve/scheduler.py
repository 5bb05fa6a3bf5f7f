"""The real-time scheduler: the steps of concurrent players batched into one World.step per tick.

Design
- A *group* is (model, mode, MaskGIT steps); each group owns one World. A player's rollout state
  is one World batch row (World.take_rows / World.put_rows). Between ticks a row lives either
  inside the group's World (the rows that stepped last tick: "resident") or outside it, as a
  RowState the player holds.
- A player has at most one request (start or step) waiting: its websocket handler awaits the
  answer before reading the next message. Requests queue per group.
- One asyncio task runs the ticks. When a request arrives it waits until every active player of
  the group (one that stepped in the last second) has asked, or a short gather window passed
  (gather_ms, or a quarter of the recent tick time when that is longer, at most 50 ms): players
  of a real-time game ask again as soon as they get their frame, so they line up in the same
  ticks, one player alone never waits, and a player who stops costs the others one window per
  tick for a second at most.
- A tick of a group, in the compute thread: starts first (World.reset, batched by context
  length), then steps batched by row key (rows holding the same number of context frames; after
  the first frames every row shares one key), at most `max_batch` rows per World.step. When the
  rows stepping are exactly last tick's rows in the same order (the steady state), the World
  steps them in place; otherwise the resident rows are taken out and the new batch put in (a
  copy of each row's caches, small next to a step).
- All model work runs in one worker thread (torch uses its intra-op threads there); the event
  loop only moves messages, so websockets, uploads and the page stay responsive during a step.
- Isolation: rows are copies (take_rows clones), a batch row reads only its own state. A tick
  that raises fails only the requests in it (each gets the error; their rows are dropped and
  the players must start again); the server and the other groups go on.
- batching=False gives every player its own World stepped at batch 1 (still in place, no row
  copies): the unbatched baseline `wmfast bench serve` measures side by side.
"""
import asyncio
import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from wmfast.errors import WmfastError


class Player:
    """One player's place in the scheduler: its group and its rollout row when not resident."""
    _ids = itertools.count()

    def __init__(self):
        self.id = next(self._ids)
        self.group = None           # the Group it plays in (None before start)
        self.row = None             # its RowState while not resident in the group's World
        self.closed = False


class Request:
    def __init__(self, player, kind: str, payload):
        self.player, self.kind, self.payload = player, kind, payload
        self.future = asyncio.get_running_loop().create_future()


class Group:
    """One World per (model, mode, steps) (per player too when batching is off)."""

    def __init__(self, key, world):
        self.key, self.world = key, world
        self.resident = []          # players whose rows are the World's batch, in batch order
        self.resident_key = None
        self.pending = []           # Requests waiting for the next tick
        self.active = {}            # player -> time of its last step request (event loop clock)

    # -- runs in the compute thread --------------------------------------------------------------
    def tick(self, requests, max_batch: int) -> list:
        """Run the requests; returns one (request, uint8 frame [H, W, 3] or Exception) per request."""
        results = []
        starts = [r for r in requests if r.kind == "start"]
        # Resident players first, in their batch order: the same players as last tick step in place.
        where = {p: i for i, p in enumerate(self.resident)}
        steps = sorted((r for r in requests if r.kind == "step"), key=lambda r: where.get(r.player, len(where)))
        for chunk in _chunks(_bucket(starts, lambda r: r.payload.shape[0]), max_batch):
            results += self._guarded(chunk, self._start)
        for chunk in _chunks(_bucket(steps, self._row_key), max_batch):
            results += self._guarded(chunk, self._step)
        return results

    def _guarded(self, chunk, fn):
        try:
            frames = fn(chunk)
            return [(r, f) for r, f in zip(chunk, frames)]
        except Exception as e:  # noqa: BLE001 -- a failed tick must not take the server down
            try:
                self._evict()
            except Exception:  # noqa: BLE001 -- the World's state is lost: so are its resident rows
                self.resident, self.resident_key = [], None
            for r in chunk:
                r.player.row = None
            return [(r, e) for r in chunk]

    def _row_key(self, request):
        p = request.player
        return self.resident_key if p in self.resident else (p.row.key if p.row is not None else None)

    def _evict(self):
        """Take the resident rows out of the World, back to their players."""
        if self.resident:
            for p, row in zip(self.resident, self.world.take_rows()):
                p.row = row
        self.resident, self.resident_key = [], None

    def _start(self, chunk):
        self._evict()
        frames = torch.from_numpy(np.stack([r.payload for r in chunk]))                   # [B, T, H, W, 3]
        self.world.reset(frames)
        for r, row in zip(chunk, self.world.take_rows()):
            r.player.row = row
        return [r.payload[-1] for r in chunk]

    def _step(self, chunk):
        players = [r.player for r in chunk]
        if players != self.resident:
            missing = [p.id for p in players if p.row is None and p not in self.resident]
            if missing:
                raise WmfastError("this session has no state (a step failed before); start again")
            self._evict()
            self.world.put_rows([p.row for p in players])
            for p in players:
                p.row = None
            self.resident = players
        actions = torch.tensor([r.payload for r in chunk], dtype=torch.int64)
        frames = self.world.step(actions, as_uint8=True).cpu().numpy()                      # [B, H, W, 3]
        self.resident_key = self.world.row_key()          # changes while the context fills up
        return list(frames)


def _bucket(requests, key) -> list:
    """Requests grouped by key, first-come order kept inside each bucket."""
    buckets = {}
    for r in requests:
        buckets.setdefault(key(r), []).append(r)
    return list(buckets.values())


def _chunks(buckets, size: int):
    for bucket in buckets:
        for i in range(0, len(bucket), size):
            yield bucket[i:i + size]


class Scheduler:
    """Batches the start/step requests of all players; see the module docstring."""

    ACTIVE_S = 1.0                  # a player who stepped this recently is waited for
    MAX_GATHER_S = 0.05

    def __init__(self, make_world, max_batch: int = 32, gather_ms: float = 10.0, batching: bool = True):
        """make_world(model_name, mode, steps) -> World (called in the compute thread)."""
        if max_batch < 1:
            raise WmfastError(f"max_batch must be >= 1, got {max_batch}")
        self.make_world, self.max_batch, self.gather_s, self.batching = make_world, max_batch, gather_ms / 1e3, batching
        self.groups = {}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wmfast-compute")
        self._wake = None
        self._task = None
        self.ticks = 0
        self.requests = 0           # requests run (ticks and requests: the mean batch over any interval)
        self.tick_s = 0.0           # moving average of a tick's compute time
        self.batch_sizes = []       # rows per tick (recent), for monitoring

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self):
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self):
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.pool.shutdown(wait=True, cancel_futures=True)

    async def compute(self, fn, *args):
        """Run fn in the compute thread (model loading, anything touching torch)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # -- what the sessions call ---------------------------------------------------------------
    async def start_player(self, player: Player, model: str, mode: str, steps: int, frames: np.ndarray):
        """Put player in the (model, mode, steps) group from context frames uint8 [T, H, W, 3];
        returns the last context frame."""
        key = (model, mode, steps) + (() if self.batching else (player.id,))
        if key not in self.groups:
            world = await self.compute(self.make_world, model, mode, steps)
            self.groups.setdefault(key, Group(key, world))
        self.leave(player)
        player.group = self.groups[key]
        return await self._submit(Request(player, "start", frames))

    async def step(self, player: Player, action: int) -> np.ndarray:
        if player.group is None:
            raise WmfastError("start a session before stepping")
        return await self._submit(Request(player, "step", int(action)))

    def leave(self, player: Player):
        """Forget a player's row (its group drops it from the World at its next change of batch)."""
        group, player.group, player.row = player.group, None, None
        if group is not None and not self.batching and group.key[-1] == player.id:
            self.groups.pop(group.key, None)

    async def _submit(self, request):
        group = request.player.group
        if request.kind == "step":
            group.active[request.player] = asyncio.get_running_loop().time()
        group.pending.append(request)
        self._wake.set()
        return await request.future

    # -- the tick loop ------------------------------------------------------------------------
    def _waiting_for_more(self, now: float) -> bool:
        """Some group has requests, and an active player of it has not asked yet."""
        for g in self.groups.values():
            if g.pending:
                g.active = {p: t for p, t in g.active.items() if now - t < self.ACTIVE_S and not p.closed
                            and p.group is g}
                asked = {r.player for r in g.pending}
                if any(p not in asked for p in g.active):
                    return True
        return False

    async def _run(self):
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            deadline = loop.time() + min(max(self.gather_s, self.tick_s / 4), self.MAX_GATHER_S)
            while self._waiting_for_more(loop.time()) and loop.time() < deadline:
                try:
                    await asyncio.wait_for(self._wake.wait(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
                self._wake.clear()
            for group in list(self.groups.values()):
                if not group.pending:
                    continue
                requests, group.pending = group.pending, []
                live = [r for r in requests if not r.player.closed and r.player.group is group]
                for r in requests:
                    if r not in live and not r.future.done():
                        r.future.set_exception(WmfastError("session closed or moved"))
                t0 = time.perf_counter()
                try:
                    results = await self.compute(group.tick, live, self.max_batch)
                except Exception as e:  # noqa: BLE001
                    results = [(r, e) for r in live]
                self.tick_s = 0.8 * self.tick_s + 0.2 * (time.perf_counter() - t0)
                self.ticks += 1
                self.requests += len(live)
                self.batch_sizes = (self.batch_sizes + [len(live)])[-1000:]
                for r, out in results:
                    if r.future.done():
                        continue
                    if isinstance(out, Exception):
                        r.future.set_exception(out)
                    else:
                        r.future.set_result(out)
            if any(g.pending for g in self.groups.values()):
                self._wake.set()
