// wmfast serve page: one websocket, one step in flight; the frame is drawn as it arrives.
// Binary frame = 16-byte header <u32 seq, u32 index, u16 height, u16 width, f32 server ms> + RGB bytes.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("screen");
const ctx = canvas.getContext("2d");

// Keys -> direction names; the server says which game action each direction plays (its "keys").
const NAMED_KEYS = {
  ArrowUp: "UP", KeyW: "UP", ArrowDown: "DOWN", KeyS: "DOWN",
  ArrowLeft: "LEFT", KeyA: "LEFT", ArrowRight: "RIGHT", KeyD: "RIGHT", Space: "FIRE",
};
const KEY_LABELS = { UP: "↑ / W", DOWN: "↓ / S", LEFT: "← / A", RIGHT: "→ / D", FIRE: "space" };

const state = {
  ws: null, info: null, session: null, actions: [], idle: 0, keyToAction: {},
  held: [], playing: false, paused: false, inFlight: false, seq: 0, sentAt: 0, lastSend: 0,
  drawTimes: [], latencies: [], frames: 0,
};

window.wmfastStats = { frames: 0, fps: 0, latency_ms_p50: null, latency_ms_p99: null, errors: 0, last_error: null,
                       session: null, action: null };

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
  if (isError) { window.wmfastStats.errors += 1; window.wmfastStats.last_error = text; }
}

function percentile(values, q) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

function fillSelect(select, items, selected) {
  select.innerHTML = "";
  for (const [value, label] of items) {
    const o = document.createElement("option");
    o.value = value; o.textContent = label; o.selected = String(value) === String(selected);
    select.appendChild(o);
  }
}

function currentModel() {
  return state.info.models.find((m) => m.name === $("model").value) || state.info.models[0];
}

function showModel() {
  const m = currentModel();
  fillSelect($("episode"), m.episodes.map((e) => [e, `episode ${e}`]), m.episodes[0]);
  if (!m.episodes.length) {
    document.querySelector('input[value="upload"]').checked = true;
    fillSelect($("episode"), [["", "none: upload a clip"]], "");
  }
}

// -- keys -------------------------------------------------------------------------------------
function buildKeys(actions, space, keys) {
  state.keyToAction = {};
  const list = $("keys");
  list.innerHTML = "";
  const add = (label, id) => {
    const li = document.createElement("li");
    li.dataset.action = id;
    li.textContent = `${label} → ${actions[id]} (${id})`;
    list.appendChild(li);
  };
  if (space === "game") {
    for (const [code, name] of Object.entries(NAMED_KEYS)) {
      if (name in keys) state.keyToAction[code] = keys[name];
    }
    for (const [name, label] of Object.entries(KEY_LABELS)) if (name in keys) add(label, keys[name]);
  }
  // Number keys: the action ids themselves (raw latent codes when the run has no action map).
  actions.slice(0, 10).forEach((_, i) => {
    state.keyToAction["Digit" + i] = i;
    state.keyToAction["Numpad" + i] = i;
    add(String(i), i);
  });
  $("space").textContent = space === "game" ? "(game actions, from the run's action map)"
                                            : "(raw latent action codes: this run has no action map)";
}

function currentAction() {
  return state.held.length ? state.held[state.held.length - 1] : state.idle;
}

function markHeld() {
  const a = currentAction();
  for (const li of $("keys").children) li.classList.toggle("held", Number(li.dataset.action) === a);
  $("action").textContent = state.actions[a] ?? a;
  window.wmfastStats.action = a;
}

function isFormField(el) {
  return el && (el.tagName === "SELECT" || el.tagName === "INPUT" || el.tagName === "BUTTON");
}

window.addEventListener("keydown", (e) => {
  if (isFormField(e.target) && e.target !== canvas) return;
  if (e.code === "KeyR") { sendReset(); e.preventDefault(); return; }
  if (e.code === "KeyP") { togglePause(); e.preventDefault(); return; }
  if (e.code === "Period" && state.paused && state.playing) { stepOnce(true); e.preventDefault(); return; }
  const a = state.keyToAction[e.code];
  if (a === undefined) return;
  e.preventDefault();
  if (!state.held.includes(a)) state.held.push(a);
  markHeld();
});
window.addEventListener("keyup", (e) => {
  const a = state.keyToAction[e.code];
  if (a === undefined) return;
  state.held = state.held.filter((x) => x !== a);
  markHeld();
});
window.addEventListener("blur", () => { state.held = []; markHeld(); });

// -- the websocket ----------------------------------------------------------------------------
function send(obj) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj));
}

function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  ws.onmessage = (ev) => (typeof ev.data === "string" ? onJson(JSON.parse(ev.data)) : onFrame(ev.data));
  ws.onclose = (ev) => {
    state.playing = false;
    status(`disconnected (${ev.code}${ev.reason ? ": " + ev.reason : ""}); reload the page to play again`, true);
  };
}

function onJson(msg) {
  if (msg.type === "welcome") {
    state.info = msg;
    fillSelect($("model"), msg.models.map((m) => [m.name, `${m.name} (${m.frame_size}px, ${m.action_space})`]));
    fillSelect($("mode"), msg.modes.map((m) => [m, m]), msg.default_mode);
    const steps = [1, 2, 3, 4, 6, 8, 10, 12, 16].filter((s) => s <= msg.max_steps);
    fillSelect($("steps"), steps.map((s) => [s, String(s)]), msg.default_steps);
    showModel();
    start();
  } else if (msg.type === "started") {
    state.session = msg.session;
    state.actions = msg.actions;
    state.idle = msg.idle_action;
    state.held = [];
    state.frames = 0; state.drawTimes = []; state.latencies = []; state.inFlight = false;
    updateStats();
    canvas.width = msg.frame_size; canvas.height = msg.frame_size;
    buildKeys(msg.actions, msg.action_space, msg.keys || {});
    markHeld();
    $("gif").href = msg.gif;
    $("mode").value = msg.mode; $("steps").value = String(msg.steps);
    window.wmfastStats.session = msg.session;
    status(`playing ${msg.model}: ${msg.mode} mode, ${msg.steps} MaskGIT steps, ` +
           `${msg.context_frames} context frame(s)`);
    state.playing = true;
    canvas.focus();
  } else if (msg.type === "error") {
    status(`server: ${msg.message}`, true);
    if (msg.request === "step") state.inFlight = false;
    if (state.session && msg.request !== null) { state.playing = true; schedule(); }  // play on where we were
  }
}

function onFrame(buf) {
  const view = new DataView(buf);
  const seq = view.getUint32(0, true), h = view.getUint16(8, true), w = view.getUint16(10, true);
  const rgb = new Uint8Array(buf, 16);
  const img = ctx.createImageData(w, h);
  for (let i = 0, j = 0; i < w * h; i++, j += 3) {
    img.data[4 * i] = rgb[j]; img.data[4 * i + 1] = rgb[j + 1]; img.data[4 * i + 2] = rgb[j + 2];
    img.data[4 * i + 3] = 255;
  }
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  ctx.putImageData(img, 0, 0);
  if (seq > 0 && seq === state.seq && state.inFlight) {      // a step's answer (seq 0: a start frame)
    state.inFlight = false;
    state.latencies.push(performance.now() - state.sentAt);
    if (state.latencies.length > 300) state.latencies.shift();
    state.frames += 1;
    const now = performance.now();
    state.drawTimes.push(now);
    while (state.drawTimes.length && now - state.drawTimes[0] > 2000) state.drawTimes.shift();
    updateStats();
  }
  schedule();
}

function updateStats() {
  const t = state.drawTimes;
  const fps = t.length > 1 ? (1000 * (t.length - 1)) / (t[t.length - 1] - t[0]) : 0;
  const s = window.wmfastStats;
  s.frames = state.frames; s.fps = fps;
  s.latency_ms_p50 = percentile(state.latencies, 0.5);
  s.latency_ms_p99 = percentile(state.latencies, 0.99);
  $("fps").textContent = fps.toFixed(1);
  $("frames").textContent = state.frames;
  $("p50").textContent = s.latency_ms_p50 === null ? "-" : s.latency_ms_p50.toFixed(0);
  $("p99").textContent = s.latency_ms_p99 === null ? "-" : s.latency_ms_p99.toFixed(0);
}

// Send the next step when the last one is answered, no faster than the frame cap.
let timer = null;
function schedule() {
  if (timer !== null || !state.playing || state.paused || state.inFlight) return;
  const cap = Number($("cap").value);
  const wait = cap > 0 ? Math.max(0, state.lastSend + 1000 / cap - performance.now()) : 0;
  timer = setTimeout(() => { timer = null; stepOnce(); }, wait);
}

function stepOnce(single) {
  if (!state.playing || (state.paused && !single) || state.inFlight) return;
  state.seq += 1;
  state.inFlight = true;
  state.sentAt = state.lastSend = performance.now();
  send({ type: "step", action: currentAction(), seq: state.seq });
}

// -- controls -----------------------------------------------------------------------------------
async function start() {
  const m = currentModel();
  const msg = { type: "start", model: m.name, mode: $("mode").value, steps: Number($("steps").value) };
  const source = document.querySelector('input[name="source"]:checked').value;
  state.playing = false;
  if (source === "upload") {
    const file = $("upload").files[0];
    if (!file) { status("choose a PNG, GIF or MP4 file to start from", true); return; }
    status(`uploading ${file.name}...`);
    const r = await fetch(`/api/upload?model=${encodeURIComponent(m.name)}`, { method: "POST", body: file });
    const body = await r.json();
    if (!r.ok) { status(`upload refused: ${body.error}`, true); return; }
    msg.upload = body.upload;
  } else if ($("episode").value !== "") {
    msg.episode = Number($("episode").value);
  }
  send(msg);
}

function sendReset() { state.playing = false; send({ type: "reset" }); }
function togglePause() {
  state.paused = !state.paused;
  $("pause").textContent = state.paused ? "play" : "pause";
  schedule();
}

$("start").onclick = () => { start(); canvas.focus(); };
$("reset").onclick = () => { sendReset(); canvas.focus(); };
$("pause").onclick = () => { togglePause(); canvas.focus(); };
$("model").onchange = () => { showModel(); canvas.focus(); };
for (const id of ["mode", "steps"]) {
  $(id).onchange = () => {
    state.playing = false;
    send({ type: "settings", mode: $("mode").value, steps: Number($("steps").value) });
    canvas.focus();
  };
}
$("cap").onchange = () => canvas.focus();
$("upload").onchange = () => { document.querySelector('input[value="upload"]').checked = true; };

canvas.focus();
connect();
