"""`wmfast serve`: the ASGI app (Starlette on uvicorn) that lets people play world models in a browser.

    GET  /                      the page (wmfast/serve/static: plain HTML/JS, works offline)
    GET  /api/models            the runs served, their actions and held-out episodes
    POST /api/upload?model=M    raw PNG/GIF/MP4 body -> {"upload": id} (type and size checked)
    GET  /api/session/ID.gif    the session's frames as a GIF
    GET  /api/stats             sessions, ticks, batch sizes, memory
    WS   /ws                    one per player (protocol below)

Websocket protocol: the client sends JSON text messages
    {"type": "start", "model": M, "mode": "fast", "steps": 1, "episode": E | "upload": ID}
    {"type": "step", "action": A, "seq": N}      (A: game action id, or latent code without a map)
    {"type": "reset"}                             (back to the start frames)
    {"type": "settings", "mode": ..., "steps": ...}   (continue from the current frames)
and receives JSON text ({"type": "welcome" | "started" | "error", ...}) and binary frames:
    16-byte header <u32 seq, u32 frame index, u16 height, u16 width, f32 server ms> + RGB bytes.
Anything malformed gets {"type": "error", "message": ...} and the session goes on.
"""
import asyncio
import collections
import json
import logging
import os
import secrets
import struct
import time
import traceback

import numpy as np

from wmfast.errors import WmfastError
from wmfast.serve.models import MAX_STEPS, MODES, ServeConfig, ServedModel
from wmfast.serve.scheduler import Player, Scheduler

STATIC = os.path.join(os.path.dirname(__file__), "static")
HEADER = struct.Struct("<IIHHf")
log = logging.getLogger("wmfast.serve")
MAX_UPLOADS = 32                # decoded uploads kept (oldest dropped)
MAX_UPLOADS_AT_ONCE = 2         # uploads read and decoded at the same time (each up to max_upload_bytes)


def memory_mb() -> dict:
    """This process's resident memory now and at peak (Linux /proc; empty elsewhere)."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out["rss_mb" if line.startswith("VmRSS") else "peak_rss_mb"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


class ServeState:
    """Everything the routes share: models, the scheduler, live sessions, uploads."""

    def __init__(self, models: dict, config: ServeConfig):
        self.models, self.config = models, config
        self.scheduler = Scheduler(self.make_world, config.max_batch, config.gather_ms, config.batching)
        self.sessions = {}
        self.uploads = collections.OrderedDict()
        self.upload_slots = asyncio.Semaphore(MAX_UPLOADS_AT_ONCE)
        self.started = time.time()

    def make_world(self, model: str, mode: str, steps: int):
        return self.models[model].make_world(mode, steps)

    def describe(self) -> dict:
        c = self.config
        return {"models": [m.describe() for m in self.models.values()], "modes": list(MODES),
                "max_steps": MAX_STEPS, "default_mode": c.mode, "default_steps": c.steps,
                "limits": {"max_sessions": c.max_sessions, "max_message_bytes": c.max_message_bytes,
                           "max_upload_bytes": c.max_upload_bytes, "idle_timeout_s": c.idle_timeout_s}}

    def stats(self) -> dict:
        sizes = self.scheduler.batch_sizes
        return {"sessions": len(self.sessions), "ticks": self.scheduler.ticks, "requests": self.scheduler.requests,
                "tick_ms": 1e3 * self.scheduler.tick_s,
                "groups": len(self.scheduler.groups), "mean_batch": float(np.mean(sizes)) if sizes else 0.0,
                "max_batch_seen": max(sizes) if sizes else 0, "batching": self.config.batching,
                "uptime_s": time.time() - self.started, **memory_mb()}


# -- one player's session -------------------------------------------------------------------------
def _int(data: dict, name: str, lo: int, hi: int) -> int:
    """data[name] must be an integer in [lo, hi)."""
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise WmfastError(f"'{name}' must be an integer, got {json.dumps(value)[:40]}")
    if not lo <= value < hi:
        raise WmfastError(f"'{name}' must be in [{lo}, {hi - 1}], got {value}")
    return value


class Session:
    def __init__(self, state: ServeState, ws):
        self.state, self.ws = state, ws
        self.id = secrets.token_urlsafe(12)
        self.player = Player()
        self.model = None           # ServedModel once started
        self.mode, self.steps = state.config.mode, state.config.steps
        self.start_frames = None    # uint8 [T, S, S, 3] the session (re)starts from
        self.frames = collections.deque(maxlen=state.config.max_gif_frames)   # what was shown, for the GIF
        self.index = 0              # frames generated since the start

    async def handle(self, message: dict):
        """One websocket message -> replies; errors become an error reply (the session goes on)."""
        kind = None
        try:
            data = self.parse(message)
            kind = data["type"]
            await getattr(self, "on_" + kind)(data)
        except WmfastError as e:
            await self.error(str(e), kind)
        except Exception as e:  # noqa: BLE001 -- a bug must cost one reply, not the server
            log.error("session %s: %s", self.id, traceback.format_exc())
            await self.error(f"internal error: {type(e).__name__}: {e}"[:300], kind)

    def parse(self, message: dict) -> dict:
        text = message.get("text")
        if text is None:
            raise WmfastError("binary messages are not accepted: send JSON text")
        limit = self.state.config.max_message_bytes
        if len(text) > limit:
            raise WmfastError(f"message of {len(text)} characters is over the limit of {limit}")
        try:
            data = json.loads(text)
        except ValueError as e:
            raise WmfastError(f"message is not JSON: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise WmfastError("a message must be a JSON object with a string 'type'")
        if data["type"] not in ("start", "step", "reset", "settings"):
            raise WmfastError(f"unknown message type {data['type'][:40]!r} (start, step, reset or settings)")
        return data

    async def error(self, message: str, request=None):
        await self.ws.send_text(json.dumps({"type": "error", "message": message, "request": request}))

    # -- messages -------------------------------------------------------------------------------
    def _settings(self, data: dict):
        mode = data.get("mode", self.mode)
        if mode not in MODES:
            raise WmfastError(f"'mode' must be one of {list(MODES)}, got {json.dumps(mode)[:40]}")
        steps = _int(data, "steps", 1, MAX_STEPS + 1) if "steps" in data else self.steps
        return mode, steps

    async def on_start(self, data: dict):
        models = self.state.models
        name = data.get("model", next(iter(models)))
        if not isinstance(name, str) or name not in models:
            raise WmfastError(f"unknown model {json.dumps(name)[:60]} (served: {list(models)})")
        model = models[name]
        mode, steps = self._settings(data)
        if "upload" in data:
            frames = self.state.uploads.get(data["upload"]) if isinstance(data["upload"], str) else None
            if frames is None:
                raise WmfastError("unknown or expired upload id; upload the clip again")
            if frames.shape[1] != model.frame_size:
                raise WmfastError(f"that upload was sized for {frames.shape[1]} px frames, {name} needs "
                                  f"{model.frame_size}; upload it again for this model")
        elif "episode" in data:
            frames = model.episode_frames(_int(data, "episode", 0, 1 << 31))
        elif model.episodes:
            frames = model.episode_frames(model.episodes[0])
        else:
            raise WmfastError(f"{name} has no dataset for held-out episodes: upload a PNG/GIF/MP4 clip to start")
        self.model, self.mode, self.steps, self.start_frames = model, mode, steps, frames
        await self._begin(frames)

    async def on_reset(self, data: dict):
        if self.start_frames is None:
            raise WmfastError("nothing to reset: send a 'start' message first")
        await self._begin(self.start_frames)

    async def on_settings(self, data: dict):
        if self.model is None:
            raise WmfastError("send a 'start' message first")
        self.mode, self.steps = self._settings(data)
        recent = list(self.frames)[-self.model.context:]          # continue from what is on screen
        await self._begin(np.stack(recent), keep_history=True)

    async def _begin(self, frames: np.ndarray, keep_history: bool = False):
        m = self.model
        t0 = time.perf_counter()
        last = await self.state.scheduler.start_player(self.player, m.name, self.mode, self.steps, frames)
        if not keep_history:
            self.frames.clear()
            self.frames.extend(frames)
            self.index = 0
        await self.ws.send_text(json.dumps({
            "type": "started", "session": self.id, "model": m.name, "mode": self.mode, "steps": self.steps,
            "frame_size": m.frame_size, "context_frames": int(frames.shape[0]), "action_space": m.action_space,
            "actions": m.action_names, "idle_action": m.idle_action, "keys": m.keys,
            "gif": f"/api/session/{self.id}.gif"}))
        await self.send_frame(last, 0, t0)

    async def on_step(self, data: dict):
        if self.model is None:
            raise WmfastError("send a 'start' message before 'step'")
        action = _int(data, "action", 0, self.model.num_actions)
        seq = _int(data, "seq", 0, 1 << 32) if "seq" in data else self.index + 1
        t0 = time.perf_counter()
        frame = await self.state.scheduler.step(self.player, action)
        self.index += 1
        self.frames.append(frame)
        await self.send_frame(frame, seq, t0)

    async def send_frame(self, frame: np.ndarray, seq: int, t0: float):
        h, w = frame.shape[:2]
        header = HEADER.pack(seq, self.index, h, w, 1e3 * (time.perf_counter() - t0))
        await self.ws.send_bytes(header + np.ascontiguousarray(frame, dtype=np.uint8).tobytes())


# -- routes -------------------------------------------------------------------------------------
def create_app(models: dict, config: ServeConfig = None):
    """models: {name: ServedModel}. Returns the Starlette app (state in app.state.wm)."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route, WebSocketRoute
    from starlette.staticfiles import StaticFiles
    from starlette.websockets import WebSocketDisconnect

    config = (config or ServeConfig()).check()
    if not models:
        raise WmfastError("serve needs at least one model")
    state = ServeState(models, config)

    @asynccontextmanager
    async def lifespan(app):
        import torch

        await state.scheduler.compute(torch.set_num_threads, config.compute_threads())
        state.scheduler.start()
        yield
        await state.scheduler.stop()

    def error(message: str, status: int = 400):
        return JSONResponse({"error": message}, status_code=status)

    async def index(request):
        return FileResponse(os.path.join(STATIC, "index.html"), headers={"Cache-Control": "no-cache"})

    async def api_models(request):
        return JSONResponse(state.describe())

    async def api_stats(request):
        return JSONResponse(state.stats())

    async def api_upload(request):
        async with state.upload_slots:
            return await read_upload(request)

    async def read_upload(request):
        name = request.query_params.get("model", next(iter(models)))
        if name not in models:
            return error(f"unknown model {name[:60]!r} (served: {list(models)})")
        limit = config.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return error(f"upload is over the limit of {limit} bytes", 413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return error(f"upload is over the limit of {limit} bytes", 413)
        if not body:
            return error("empty upload: send the PNG/GIF/MP4 file as the request body")
        m = models[name]
        from wmfast.serve.media import decode_clip

        try:
            frames = await asyncio.to_thread(decode_clip, bytes(body), m.frame_size, m.context,
                                             config.max_upload_frames, config.max_upload_side)
        except WmfastError as e:
            return error(str(e), 415 if "must be a PNG" in str(e) else 400)
        upload = secrets.token_urlsafe(12)
        state.uploads[upload] = frames
        while len(state.uploads) > MAX_UPLOADS:
            state.uploads.popitem(last=False)
        return JSONResponse({"upload": upload, "frames": int(frames.shape[0]), "frame_size": m.frame_size})

    async def api_gif(request):
        session = state.sessions.get(request.path_params["session"])
        if session is None or not session.frames:
            return error("no such live session (the GIF is there while the session is open)", 404)
        from wmfast.serve.media import gif_bytes

        data = await asyncio.to_thread(gif_bytes, list(session.frames))
        return Response(data, media_type="image/gif",
                        headers={"Content-Disposition": f'attachment; filename="wmfast-{session.model.name}.gif"'})

    async def play(ws):
        origin = ws.headers.get("origin")
        if origin and origin.split("://", 1)[-1] != ws.headers.get("host"):
            await ws.close(code=1008, reason="cross-origin websocket refused")
            return
        await ws.accept()
        if len(state.sessions) >= config.max_sessions:
            await ws.send_text(json.dumps({"type": "error", "request": None,
                                           "message": f"server full: {config.max_sessions} sessions at most"}))
            await ws.close(code=1013, reason="server full")
            return
        session = Session(state, ws)
        state.sessions[session.id] = session
        try:
            await ws.send_text(json.dumps({"type": "welcome", "session": session.id, **state.describe()}))
            while True:
                try:
                    message = await asyncio.wait_for(ws.receive(), config.idle_timeout_s)
                except asyncio.TimeoutError:
                    await session.error(f"idle for {config.idle_timeout_s:g} s: closing the session")
                    await ws.close(code=1000, reason="idle")
                    break
                if message["type"] == "websocket.disconnect":
                    break
                await session.handle(message)
        except (WebSocketDisconnect, RuntimeError):
            pass                      # the client went away mid-reply
        finally:
            session.player.closed = True
            state.scheduler.leave(session.player)
            state.sessions.pop(session.id, None)

    routes = [Route("/", index), Route("/api/models", api_models), Route("/api/stats", api_stats),
              Route("/api/upload", api_upload, methods=["POST"]),
              Route("/api/session/{session}.gif", api_gif), WebSocketRoute("/ws", play),
              Mount("/static", StaticFiles(directory=STATIC), name="static")]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.wm = state
    return app


def load_models(runs: dict, data: str = None, config: ServeConfig = None) -> dict:
    """{name: run dir} -> {name: ServedModel} (loaded once, before serving)."""
    config = config or ServeConfig()
    return {name: ServedModel(name, run, data, config.device, config.val_fraction, config.seed)
            for name, run in runs.items()}


def listen_socket(host: str, port: int):
    """A bound listening socket (port 0: a free one)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise WmfastError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def uvicorn_server(app, config: ServeConfig, log_level: str = "warning"):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, ws="websockets-sansio", ws_max_size=config.max_frame_bytes,
                                         log_level=log_level, lifespan="on", timeout_graceful_shutdown=2))


def serve(runs: dict, config: ServeConfig = None, data: str = None, log_level: str = "info", on_listen=print):
    """Load the runs and serve them until interrupted (what `wmfast serve` runs)."""
    config = (config or ServeConfig()).check()
    models = load_models(runs, data, config)
    sock = listen_socket(config.host, config.port)
    host, port = sock.getsockname()[:2]
    on_listen(f"wmfast serve: {', '.join(models)} on http://{host}:{port}/  "
              f"(mode {config.mode}, {config.steps} MaskGIT steps, batching {'on' if config.batching else 'off'})")
    server = uvicorn_server(create_app(models, config), config, log_level)
    asyncio.run(server.serve(sockets=[sock]))


class ServerThread:
    """The app served from a background thread on 127.0.0.1 (tests, benchmarks)."""

    def __init__(self, app, config: ServeConfig = None, host: str = "127.0.0.1"):
        import threading

        config = config or ServeConfig()
        self.sock = listen_socket(host, 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.server = uvicorn_server(app, config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])),
                                       daemon=True, name="wmfast-serve")

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise WmfastError("the server thread did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
