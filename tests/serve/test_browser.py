"""The page in real headless Chromium (Debian's `chromium`, driven by the Python playwright
package): it loads offline, focuses the game, draws frames as they arrive, keys choose actions,
different actions give different frames, uploads and the GIF download work. A screenshot is
saved as an artifact (WMFAST_TEST_ARTIFACTS, default: the test's tmp dir)."""
import os
import numpy as np
import pytest
from serve_helpers import browser_or_skip

CHROMIUM, playwright_api = browser_or_skip()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--headless"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(server.url + "/")
    page.wait_for_function("window.wmfastStats.frames >= 3", timeout=30000)
    yield page
    # the page works offline: everything it fetched came from the server
    assert all(u.startswith(server.url) or u.startswith(server.url.replace("http", "ws")) for u in requests), requests
    context.close()


def stats(page):
    return page.evaluate("window.wmfastStats")


def canvas_pixels(page):
    data = page.evaluate("""() => {
        const c = document.getElementById('screen');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);
    }""")
    return np.array(data, np.uint8)


def paused_run(page, key, frames=3):
    """Reset, then step `frames` frames one by one with `key` held -> the last frame's pixels."""
    page.keyboard.press("r")
    page.wait_for_function("window.wmfastStats.frames === 0", timeout=30000)
    if key:
        page.keyboard.down(key)
    for i in range(1, frames + 1):
        page.keyboard.press("Period")
        page.wait_for_function(f"window.wmfastStats.frames === {i}", timeout=30000)
    pixels = canvas_pixels(page)
    if key:
        page.keyboard.up(key)
    return pixels


def test_page_plays_and_keys_choose_actions(page, tmp_path):
    # focused on load, frames flowing, stats measured in the page
    assert page.evaluate("document.activeElement.id") == "screen"
    s = stats(page)
    assert s["frames"] >= 3 and s["fps"] > 0 and s["latency_ms_p50"] > 0 and s["latency_ms_p99"] >= s["latency_ms_p50"]
    assert s["errors"] == 0, s
    assert page.evaluate("getComputedStyle(document.getElementById('screen')).imageRendering") == "pixelated"
    keys = page.inner_text("#keys")
    assert "UP" in keys and "LEFT" in keys and "0" in keys          # game keys and number keys shown

    page.keyboard.down("ArrowUp")
    page.wait_for_function("window.wmfastStats.action === 1")
    before = stats(page)["frames"]
    page.wait_for_function(f"window.wmfastStats.frames >= {before + 3}", timeout=30000)
    page.keyboard.up("ArrowUp")
    page.wait_for_function("window.wmfastStats.action === 0")        # back to NOOP when released

    page.keyboard.press("p")                                         # pause: frame by frame from here
    up = paused_run(page, "ArrowUp")
    up_again = paused_run(page, "KeyW")                              # W is UP too
    down = paused_run(page, "ArrowDown")
    assert np.array_equal(up, up_again)                              # same start, same action: same frames
    assert np.abs(up.astype(int) - down.astype(int)).max() > 10      # another action: other frames

    out = os.environ.get("WMFAST_TEST_ARTIFACTS", str(tmp_path))
    os.makedirs(out, exist_ok=True)
    shot = os.path.join(out, "serve-page.png")
    page.screenshot(path=shot)
    assert os.path.getsize(shot) > 1000
    print(f"screenshot: {shot}")


def test_page_upload_settings_and_gif_download(page, tmp_path):
    import imageio.v3 as iio

    clip = np.random.default_rng(0).integers(0, 256, (4, 24, 24, 3), dtype=np.uint8)
    path = tmp_path / "start.gif"
    iio.imwrite(path, clip, extension=".gif")
    page.set_input_files("#upload", str(path))
    page.check('input[value="upload"]')
    page.click("#start")
    page.wait_for_function("document.getElementById('status').textContent.includes('3 context frame')",
                           timeout=30000)
    page.wait_for_function("window.wmfastStats.frames >= 3", timeout=30000)
    page.select_option("#mode", "compat")
    page.wait_for_function("document.getElementById('status').textContent.includes('compat mode')",
                           timeout=30000)
    page.wait_for_function("window.wmfastStats.frames >= 2", timeout=30000)
    with page.expect_download() as info:
        page.click("#gif")
    saved = tmp_path / "session.gif"
    info.value.save_as(saved)
    frames = iio.imread(saved, index=None)
    assert frames.ndim == 4 and frames.shape[0] >= 3 + 2
    assert stats(page)["errors"] == 0
