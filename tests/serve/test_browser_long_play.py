"""The shipped maze World played for real in headless Chromium: 300 frames of arrow-key presses
(random held actions, the page in single-step mode so every frame gets the key held at its step),
with the server's own default mode and MaskGIT steps. On sampled frames the agent is read from the
canvas and compared with the real game replaying the same keys from the same start."""
import numpy as np
import pytest
from serve_helpers import browser_or_skip

CHROMIUM, playwright_api = browser_or_skip()

FRAMES, SAMPLE_EVERY, TARGET = 300, 5, 0.95
KEYS = {1: "ArrowUp", 2: "ArrowDown", 3: "ArrowLeft", 4: "ArrowRight"}     # NOOP: no key held


@pytest.fixture(scope="module")
def maze_server(tiny_game_cache):
    from wmfast.serve import ServeConfig, ServerThread, create_app, load_models
    from wmfast.train import pretrained_run

    run = pretrained_run("maze")
    if run is None:
        pytest.skip("no shipped maze model")
    cfg = ServeConfig()                             # `wmfast serve`'s defaults: its mode and MaskGIT steps
    with ServerThread(create_app(load_models({"maze": run}, config=cfg), cfg), cfg) as server:
        yield server, cfg


def models(server) -> list:
    import json
    import urllib.request

    with urllib.request.urlopen(server.url + "/api/models", timeout=30) as r:
        data = json.loads(r.read())
    return data["models"] if isinstance(data, dict) else data


def canvas_frame(page) -> np.ndarray:
    data = page.evaluate("""() => {
        const c = document.getElementById('screen');
        return [c.width, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];
    }""")
    size, pixels = data
    return np.array(pixels, np.uint8).reshape(size, size, 4)[..., :3]


def test_arrow_keys_move_the_agent_where_the_real_game_has_it_for_300_frames(maze_server):
    from wmfast.data.frames import to_float
    from wmfast.data.games import _episode_seed, make_game
    from wmfast.eval.long_play import HeldRandomActions, MazeReader

    server, cfg = maze_server
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page()
        page.goto(server.url + "/")
        page.wait_for_function("window.wmfastStats.frames >= 1", timeout=60000)
        assert page.input_value("#mode") == cfg.mode
        episode = int(page.input_value("#episode"))
        page.keyboard.press("p")                                       # pause: one frame per Period
        page.keyboard.press("r")
        page.wait_for_function("window.wmfastStats.frames === 0", timeout=30000)

        # The real game: the dataset's episode (game:maze, seed 0) up to the context's last frame.
        game = make_game("maze", _episode_seed(0, episode))
        context = next(m["context"] for m in models(server) if m["name"] == "maze")
        for _ in range(context - 1):
            game.step(game.policy())
        reader, choose = MazeReader(32), HeldRandomActions(5, 1, seed=17)
        held, right, sampled = None, 0, 0
        for i in range(1, FRAMES + 1):
            action = int(choose([game])[0])
            key = KEYS.get(action)
            if key != held:
                if held:
                    page.keyboard.up(held)
                if key:
                    page.keyboard.down(key)
                held = key
            page.wait_for_function(f"window.wmfastStats.action === {action}", timeout=30000)
            page.keyboard.press("Period")
            page.wait_for_function(f"window.wmfastStats.frames === {i}", timeout=60000)
            game.step(action)
            if i % SAMPLE_EVERY == 0:
                cells = reader.cells(to_float(canvas_frame(page))[None])[0]
                sampled += 1
                right += bool(cells[game.agent] == 3 and (cells == 3).sum() == 1)
        assert page.evaluate("window.wmfastStats.errors") == 0
        browser.close()
    share = right / sampled
    print(f"agent where the real game has it on {right} of {sampled} sampled frames ({100 * share:.1f}%)")
    assert share >= TARGET
