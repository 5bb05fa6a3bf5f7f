"""The websocket server without a browser: frames against a direct World rollout, batching and
isolation between concurrent players, bad input (error reply, session survives), limits, uploads."""
import asyncio
import io
import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

pytest.importorskip("websockets")  # a test dependency (setup.py "test" extra); GPU images may lack it
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

import wmfast
from wmfast import World
from wmfast.data import load_dataset
from wmfast.serve.app import HEADER

from serve_helpers import GAME_ACTIONS, SIZES, start_server


def ws_url(server):
    return server.url.replace("http", "ws") + "/ws"


def recv_json(ws):
    msg = ws.recv(timeout=30)
    assert isinstance(msg, str), "expected a JSON text message, got a binary frame"
    return json.loads(msg)


def recv_frame(ws):
    msg = ws.recv(timeout=30)
    assert isinstance(msg, bytes), f"expected a frame, got {msg}"
    seq, index, h, w, _ = HEADER.unpack(msg[:HEADER.size])
    return seq, index, np.frombuffer(msg[HEADER.size:], np.uint8).reshape(h, w, 3)


def start(ws, **fields):
    welcome = recv_json(ws)
    assert welcome["type"] == "welcome"
    ws.send(json.dumps({"type": "start", **fields}))
    started = recv_json(ws)
    assert started["type"] == "started", started
    return welcome, started, recv_frame(ws)[2]


def step(ws, action, seq=None):
    ws.send(json.dumps({"type": "step", "action": action, **({} if seq is None else {"seq": seq})}))
    return recv_frame(ws)


def held_out_context(run, episode, C):
    ds = load_dataset(json.load(open(f"{run}/recipe.json"))["data"])
    s, _ = ds.episodes[episode]
    return np.asarray(ds.frames[s:s + C])                                           # [C, S, S, 3]


def solo_rollout(run, context, actions, mode="fast", steps=2):
    """The reference: one World of the run at batch 1, game actions through its action map."""
    world = World(wmfast.load(run), device="cpu", mode=mode, steps=steps, actions="game")
    world.reset(torch.from_numpy(context[None]))
    return world.rollout(torch.tensor([actions]), as_uint8=True)[0].numpy()           # [N, S, S, 3]


def test_welcome_lists_held_out_episodes_and_actions(server, tiny_run):
    with connect(ws_url(server)) as ws:
        welcome = recv_json(ws)
    models = {m["name"]: m for m in welcome["models"]}
    ds = load_dataset(json.load(open(f"{tiny_run}/recipe.json"))["data"])
    assert models["tiny"]["episodes"] == ds.split(0.1, seed=0)[1]          # the evaluator's held-out split
    assert models["tiny"]["actions"] == GAME_ACTIONS and models["tiny"]["action_space"] == "game"
    assert models["latent"]["action_space"] == "latent" and len(models["latent"]["actions"]) == SIZES["n_actions"]
    # The arrow keys play the actions of their names; a latent run binds none.
    assert models["tiny"]["keys"] == {n.upper(): i for i, n in enumerate(GAME_ACTIONS)
                                      if n.upper() in ("UP", "DOWN", "LEFT", "RIGHT", "FIRE")}
    assert models["latent"]["keys"] == {}


def test_concurrent_players_get_their_own_rollouts(server, tiny_run):
    """Three players step at once (batched by the scheduler) with different actions; each gets
    exactly the frames of its own World at batch 1, and steps really were batched."""
    C = SIZES["context_length"]
    episode = json.loads(urllib.request.urlopen(server.url + "/api/models").read())["models"][0]["episodes"][0]
    context = held_out_context(tiny_run, episode, C)
    plans = [[1, 1, 2, 3, 4, 0], [2, 2, 2, 1, 0, 4], [4, 3, 1, 1, 2, 2]]
    ticks_before = server.server.config.app.state.wm.scheduler.ticks

    async def player(actions):
        import websockets

        async with websockets.connect(ws_url(server)) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "start", "model": "tiny", "episode": episode, "steps": 2}))
            assert json.loads(await ws.recv())["type"] == "started"
            first = await ws.recv()
            frames = []
            for i, a in enumerate(actions):
                await ws.send(json.dumps({"type": "step", "action": a, "seq": i + 1}))
                msg = await ws.recv()
                assert HEADER.unpack(msg[:HEADER.size])[0] == i + 1
                frames.append(np.frombuffer(msg[HEADER.size:], np.uint8).reshape(16, 16, 3))
            return np.frombuffer(first[HEADER.size:], np.uint8).reshape(16, 16, 3), np.stack(frames)

    async def all_players():
        return await asyncio.gather(*(player(p) for p in plans))

    results = asyncio.run(all_players())
    state = server.server.config.app.state.wm
    for (first, frames), actions in zip(results, plans):
        np.testing.assert_array_equal(first, context[-1])                  # the start frame is the context's last
        ref = solo_rollout(tiny_run, context, actions)
        assert np.abs(frames.astype(int) - ref.astype(int)).max() <= 1
    # 3 players x (1 start + 6 steps) = 21 requests; batching needs fewer ticks than that.
    assert state.scheduler.ticks - ticks_before < 21
    assert max(state.scheduler.batch_sizes) >= 2


def test_different_actions_give_different_frames(server):
    outs = []
    for action in (1, 2):                  # UP, DOWN from the same start
        with connect(ws_url(server)) as ws:
            start(ws, model="tiny")
            outs.append(np.stack([step(ws, action)[2] for _ in range(3)]))
    assert np.abs(outs[0].astype(int) - outs[1].astype(int)).max() > 10


BAD_MESSAGES = [
    ("not json{", "not JSON"),
    ("[1, 2]", "JSON object"),
    ('{"action": 1}', "JSON object"),
    ('{"type": "fly"}', "unknown message type"),
    ('{"type": "step", "action": "1"}', "'action' must be an integer"),
    ('{"type": "step", "action": 1.5}', "'action' must be an integer"),
    ('{"type": "step", "action": true}', "'action' must be an integer"),
    ('{"type": "step"}', "'action' must be an integer"),
    ('{"type": "step", "action": -1}', "must be in [0, 4]"),
    ('{"type": "step", "action": 5}', "must be in [0, 4]"),
    ('{"type": "step", "action": 1099511627776}', "must be in [0, 4]"),
    ('{"type": "step", "action": 1, "seq": "x"}', "'seq' must be an integer"),
    ('{"type": "start", "model": "nope"}', "unknown model"),
    ('{"type": "start", "model": 3}', "unknown model"),
    ('{"type": "start", "mode": "turbo"}', "'mode' must be one of"),
    ('{"type": "start", "steps": 0}', "'steps' must be in [1, 16]"),
    ('{"type": "start", "steps": "4"}', "'steps' must be an integer"),
    ('{"type": "start", "episode": 0}', "not a held-out episode"),
    ('{"type": "start", "upload": "forged"}', "unknown or expired upload"),
    ('{"type": "settings", "steps": 99}', "'steps' must be in"),
    ('{"type": "step", "action": 1, "pad": "' + "x" * 5000 + '"}', "over the limit"),
]


def test_bad_messages_get_an_error_and_the_session_survives(server):
    with connect(ws_url(server)) as ws:
        start(ws, model="tiny")
        seq, index, _ = step(ws, 1, seq=7)
        assert (seq, index) == (7, 1)
        for text, expected in BAD_MESSAGES:
            ws.send(text)
            reply = recv_json(ws)
            assert reply["type"] == "error" and expected in reply["message"], (text[:60], reply)
        ws.send(b"\x00\x01binary")
        assert "binary messages are not accepted" in recv_json(ws)["message"]
        seq, index, frame = step(ws, 2, seq=8)                 # still the same session, one frame further
        assert (seq, index, frame.shape) == (8, 2, (16, 16, 3))


def test_step_before_start_and_reset_before_start_are_errors(server):
    with connect(ws_url(server)) as ws:
        recv_json(ws)
        for msg in ({"type": "step", "action": 0}, {"type": "reset"}, {"type": "settings", "mode": "compat"}):
            ws.send(json.dumps(msg))
            assert recv_json(ws)["type"] == "error"


def test_latent_run_takes_raw_codes(server):
    with connect(ws_url(server)) as ws:
        _, started, _ = start(ws, model="latent")
        assert started["action_space"] == "latent"
        assert step(ws, SIZES["n_actions"] - 1)[2].shape == (16, 16, 3)
        ws.send(json.dumps({"type": "step", "action": SIZES["n_actions"]}))
        assert "must be in" in recv_json(ws)["message"]


def test_reset_settings_and_gif(server, tiny_run):
    with connect(ws_url(server)) as ws:
        _, started, first = start(ws, model="tiny")
        a = [step(ws, 1)[2] for _ in range(3)]
        ws.send(json.dumps({"type": "reset"}))
        assert recv_json(ws)["type"] == "started"
        np.testing.assert_array_equal(recv_frame(ws)[2], first)
        b = [step(ws, 1)[2] for _ in range(3)]
        np.testing.assert_array_equal(np.stack(a), np.stack(b))      # same start, same actions, same frames
        ws.send(json.dumps({"type": "settings", "mode": "compat", "steps": 3}))
        changed = recv_json(ws)
        assert (changed["mode"], changed["steps"]) == ("compat", 3)
        np.testing.assert_array_equal(recv_frame(ws)[2], b[-1])       # continues from the frame on screen
        step(ws, 0)
        import imageio.v3 as iio

        gif = iio.imread(urllib.request.urlopen(server.url + started["gif"]).read(), index=None)
        # context (3) + 3 steps after the reset + 1 after the mode change, 4x upscaled
        assert gif.shape[:3] == (SIZES["context_length"] + 4, 64, 64)


def post(server, body, model="tiny", headers=None):
    req = urllib.request.Request(f"{server.url}/api/upload?model={model}", data=body, method="POST",
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def clip(n, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_uploads_png_gif_mp4_start_a_session(server):
    import imageio.v3 as iio

    for ext, video in ((".png", clip(1, 40, 30)[0]), (".gif", clip(5, 20, 20)), (".mp4", clip(6, 32, 48))):
        status, body = post(server, iio.imwrite("<bytes>", video, extension=ext))
        assert status == 200, body
        assert body["frames"] == (1 if ext == ".png" else SIZES["context_length"])
        with connect(ws_url(server)) as ws:
            _, started, frame = start(ws, model="tiny", upload=body["upload"])
            assert started["context_frames"] == body["frames"] and frame.shape == (16, 16, 3)
            assert step(ws, 3)[2].shape == (16, 16, 3)


def test_bad_uploads_are_refused(server):
    from PIL import Image

    assert post(server, b"hello, I am a text file")[0] == 415
    assert post(server, b"")[0] == 400
    assert post(server, b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)[0] == 400          # PNG magic, corrupt body
    buf = io.BytesIO()
    Image.new("RGB", (3000, 20)).save(buf, format="PNG")                         # small file, too many pixels
    status, body = post(server, buf.getvalue())
    assert status == 400 and "at most 1024x1024" in body["error"]
    assert post(server, clip(1, 8, 8).tobytes(), model="nope")[0] == 400


def test_oversized_websocket_frame_closes_only_that_connection(server):
    with connect(ws_url(server), max_size=None) as ws:
        recv_json(ws)
        ws.send("x" * (2 << 20))                                 # over max_frame_bytes (1 MiB)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=30)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    with connect(ws_url(server)) as ws:                          # the server goes on
        start(ws, model="tiny")
        assert step(ws, 1)[2].shape == (16, 16, 3)


def test_upload_size_limit(tiny_run):
    with start_server({"tiny": tiny_run}, max_upload_bytes=65536) as server:
        # refused on the declared length, before the body is read
        status, body = post(server, b"\x89PNG", headers={"Content-Length": str(1 << 30)})
        assert status == 413 and "over the limit of 65536 bytes" in body["error"]
        # no declared length (chunked): refused once the streamed body passes the limit
        chunks = iter([b"\x89PNG\r\n\x1a\n", b"\x00" * 70000])
        status, body = post(server, chunks, headers={"Transfer-Encoding": "chunked"})
        assert status == 413 and "over the limit" in body["error"]


def test_too_many_sessions_and_idle_timeout(tiny_run):
    with start_server({"tiny": tiny_run}, max_sessions=2, idle_timeout_s=1.0) as server:
        a, b = connect(ws_url(server)).__enter__(), connect(ws_url(server)).__enter__()
        recv_json(a), recv_json(b)
        with connect(ws_url(server)) as c:
            reply = recv_json(c)
            assert reply["type"] == "error" and "server full: 2 sessions" in reply["message"]
            with pytest.raises(ConnectionClosed) as info:
                c.recv(timeout=30)
            assert info.value.rcvd.code == 1013
        b.close()
        deadline = time.time() + 10
        while len(server.server.config.app.state.wm.sessions) > 1 and time.time() < deadline:
            time.sleep(0.05)
        with connect(ws_url(server)) as d:                       # a place is free again
            assert recv_json(d)["type"] == "welcome"
        # a stays silent: closed after the idle timeout, with a message saying why
        reply = recv_json(a)
        assert reply["type"] == "error" and "idle" in reply["message"]
        with pytest.raises(ConnectionClosed):
            a.recv(timeout=30)
        a.close()
