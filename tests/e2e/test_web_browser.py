"""The live view in a real Chromium: every camera's tile advancing (frame codes read back from each
canvas with getImageData), OFFLINE and back, the enlarged camera with its HUD, the token cookie,
the viewer limit as the page shows it, reconnection after the server goes away and comes back on
the same port, H.264 through Media Source Extensions (tiles and the enlarged camera), and
capture-to-screen latency read from the pictures (printed, never asserted).

The run is a fake one (tests/webfeed.py): no Triton, no RTSP.
"""

from __future__ import annotations

import contextlib
import statistics

import pytest

from streamer.web import WebDisplay

from ..browser import (BIG_JS, BIG_VIDEO_JS, LATENCY_HOOK_JS, TILES_JS, VIDEO_LATENCY_HOOK_JS, VIDEO_TILES_JS,
                       chromium)
from ..helpers import wait_until
from ..webclient import Socket
from ..webfeed import FakeRun

PASSWORD = "hunter2"
SECRET_URL = f"rtsp://admin:{PASSWORD}@10.0.0.9:554/stream1"
CAMERAS = [f"cam {i}" for i in range(1, 9)]


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@contextlib.contextmanager
def live(cameras=CAMERAS, fps=8.0, port=0, width=320, height=240, **options):
    with WebDisplay("127.0.0.1", port, name_of={1: "person", 3: "car"}.get, **options) as web:
        with FakeRun(web, cameras, fps=fps, width=width, height=height) as run:
            yield web, run


def tiles(driver):
    return driver.execute_script(TILES_JS)


def advancing(driver, names, timeout=60):
    """Every named tile's frame code read back from its canvas, twice, larger the second time."""
    first = {}

    def read() -> bool:
        seen = {t["name"]: t["index"] for t in tiles(driver) if t["name"] in names and t["index"] is not None}
        for name, index in seen.items():
            first.setdefault(name, index)
        return len(seen) == len(names) and all(seen[n] > first[n] for n in names)

    wait_until(read, timeout, 0.2, f"tiles {sorted(names)} to advance")


def test_every_camera_advances_goes_offline_and_comes_back(browser):
    with live() as (web, run):
        browser.get(web.url)
        wait_until(lambda: len(tiles(browser)) == len(CAMERAS), 30, 0.2, "a tile per camera")
        assert [t["name"] for t in tiles(browser)] == CAMERAS
        advancing(browser, CAMERAS)  # 8 cameras on one page: one WebSocket, no 6-connection limit
        assert all(t["badge"] == "UP" and t["banner"] is None for t in tiles(browser))
        assert "detection age 0.4 s" in tiles(browser)[0]["figures"]

        run.offline("cam 3", f"OFFLINE: {SECRET_URL} refused the connection")

        def offline() -> bool:
            tile = next(t for t in tiles(browser) if t["name"] == "cam 3")
            return tile["badge"] == "OFFLINE" and tile["banner"] is not None

        wait_until(offline, 30, 0.2, "cam 3 to show OFFLINE")
        tile = next(t for t in tiles(browser) if t["name"] == "cam 3")
        assert "rtsp://***@10.0.0.9" in tile["banner"]
        assert PASSWORD not in browser.page_source
        advancing(browser, [n for n in CAMERAS if n != "cam 3"])  # the others go on

        run.online("cam 3")
        wait_until(lambda: next(t for t in tiles(browser) if t["name"] == "cam 3")["badge"] == "UP", 30, 0.2,
                   "cam 3 back up")
        advancing(browser, ["cam 3"])

        run.end()
        wait_until(lambda: all(t["badge"] == "ENDED" for t in tiles(browser)), 30, 0.2, "ENDED on every tile")


def test_the_enlarged_camera_full_size_with_its_hud(browser):
    with live(["small", "wide"], fps=8, width=1280, height=720) as (web, run):
        browser.get(web.url)
        wait_until(lambda: len(tiles(browser)) == 2, 30, 0.2, "two tiles")
        advancing(browser, ["small", "wide"])
        assert all(t["width"] == 640 for t in tiles(browser))  # 1280 px scaled to the 640 px tile
        browser.find_element("css selector", '#grid .tile[data-camera="wide"]').click()
        first = {}

        def big_advances() -> bool:
            big = browser.execute_script(BIG_JS)
            if not big or big["index"] is None:
                return False
            first.setdefault("index", big["index"])
            return big["index"] > first["index"] and big["width"] == 1280

        wait_until(big_advances, 60, 0.2, "the enlarged camera to advance at full size")
        big = browser.execute_script(BIG_JS)
        assert big["name"] == "wide" and big["badge"] == "UP"
        assert any("display 8.0 fps" in line for line in big["hud"])
        assert "person #7 90%" in big["detections"]
        assert browser.execute_script("return document.getElementById('grid').hidden") is True
        assert browser.current_url.endswith("#camera=wide")

        browser.refresh()  # the page survives a reload, enlarged view included
        wait_until(lambda: (browser.execute_script(BIG_JS) or {}).get("width") == 1280, 60, 0.2,
                   "the enlarged view after a reload")
        browser.find_element("id", "back").click()
        wait_until(lambda: browser.execute_script(BIG_JS) is None, 10, 0.1, "back to every camera")
        advancing(browser, ["small", "wide"])


def test_the_token_moves_into_a_cookie_and_the_page_works_with_it(browser):
    token = "browser-Token_42"
    with live(["a", "b"], token=token) as (web, _):
        browser.get(web.url)
        assert "a token is needed" in browser.page_source
        browser.get(f"{web.url}?token={token}")
        wait_until(lambda: len(tiles(browser)) == 2, 30, 0.2, "the tiles")
        assert "token" not in browser.current_url
        advancing(browser, ["a", "b"])  # the WebSocket authenticated by the cookie
        cookie = browser.get_cookie(f"streamer_token_{web.port}")
        assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert browser.execute_script("return document.cookie") == ""  # HttpOnly: scripts cannot read it
        browser.delete_all_cookies()


def test_the_page_says_when_there_are_too_many_viewers(browser):
    with live(["a"], max_viewers=1) as (web, _):
        with Socket(web.port) as other:
            other.until(lambda k, v: k == "text", 10, "the other viewer's state")
            browser.get(web.url)
            wait_until(lambda: "too many viewers" in browser.find_element("id", "status").text, 30, 0.2,
                       "the page to say there are too many viewers")
        # the other viewer left: the page gets in on a retry
        wait_until(lambda: len(tiles(browser)) == 1 and tiles(browser)[0]["index"] is not None, 60, 0.2,
                   "the page to get in after the other viewer left")


def test_the_page_reconnects_when_the_server_comes_back_on_the_same_port(browser):
    with live(["before"]) as (web, _):
        port = web.port
        browser.get(web.url)
        advancing(browser, ["before"])
    wait_until(lambda: "reconnecting" in browser.find_element("id", "status").text, 30, 0.2,
               "the page to notice the server went away")
    with live(["after 1", "after 2"], port=port) as (web, _):
        wait_until(lambda: [t["name"] for t in tiles(browser)] == ["after 1", "after 2"], 60, 0.2,
                   "the page to reconnect to the new run")
        advancing(browser, ["after 1", "after 2"])


def test_capture_to_canvas_latency_is_read_from_the_pictures(browser):
    with live(["a", "b", "c", "d"], fps=15, width=640, height=360) as (web, _):
        browser.get(web.url)
        advancing(browser, ["a", "b", "c", "d"])
        browser.execute_script(LATENCY_HOOK_JS)
        wait_until(lambda: browser.execute_script("return window.__latency.length") >= 100, 60, 0.2,
                   "100 pictures drawn")
        samples = browser.execute_script("return window.__latency")
        assert all(0 <= s < 60_000 for s in samples)  # the clock code was read back (not a figure)
        q = statistics.quantiles(samples, n=20)
        print(f"\ncapture-to-canvas (4 cameras 640x360 at 15 fps, WebSocket JPEG): "
              f"p50 {statistics.median(samples):.0f} ms, p95 {q[18]:.0f} ms over {len(samples)} pictures")


def advancing_videos(driver, names, timeout=60):
    """Every named tile's <video> (H.264 through MSE) shows frame codes that advance."""
    first = {}

    def read() -> bool:
        seen = {t["name"]: t["index"] for t in driver.execute_script(VIDEO_TILES_JS)
                if t["name"] in names and t["index"] is not None}
        for name, index in seen.items():
            first.setdefault(name, index)
        return len(seen) == len(names) and all(seen[n] > first[n] for n in names)

    wait_until(read, timeout, 0.2, f"H.264 tiles {sorted(names)} to advance")


def test_h264_through_media_source_extensions(browser):
    with live(["a", "b", "c", "d"], fps=15, width=1280, height=720) as (web, _):
        browser.get(f"{web.url}?codec=h264")
        wait_until(lambda: len(tiles(browser)) == 4, 30, 0.2, "the tiles")
        advancing_videos(browser, ["a", "b", "c", "d"])
        assert all(t["width"] == 640 for t in browser.execute_script(VIDEO_TILES_JS))  # tile size
        assert browser.execute_script("return document.getElementById('h264').checked") is True
        browser.execute_script(VIDEO_LATENCY_HOOK_JS)
        wait_until(lambda: browser.execute_script("return window.__latency.length") >= 100, 60, 0.2,
                   "100 pictures shown")
        samples = browser.execute_script("return window.__latency")
        assert all(0 <= s < 60_000 for s in samples)
        print(f"\ncapture-to-video (4 cameras 1280x720 at 15 fps, H.264 tiles through MSE): "
              f"p50 {statistics.median(samples):.0f} ms, p95 {statistics.quantiles(samples, n=20)[18]:.0f} ms")

        browser.find_element("css selector", '#grid .tile[data-camera="c"]').click()
        first = {}

        def big_advances() -> bool:
            big = browser.execute_script(BIG_VIDEO_JS)
            if not big or big["index"] is None:
                return False
            first.setdefault("index", big["index"])
            return big["name"] == "c" and big["index"] > first["index"] and big["width"] == 1280

        wait_until(big_advances, 60, 0.2, "the enlarged camera in H.264 at full size")
        browser.find_element("id", "back").click()
        advancing_videos(browser, ["a", "b", "c", "d"])
        browser.find_element("id", "h264").click()  # back to JPEG on canvases
        advancing(browser, ["a", "b", "c", "d"])


EVIL_PAGE = """<!doctype html><html><body>
<img id="mosaic" src="http://localhost:{port}/mosaic.mjpg"><img id="camera" src="http://localhost:{port}/camera/a.mjpg">
<script>
window.result = {{ws: "pending", received: 0}};
const ws = new WebSocket("ws://localhost:{port}/ws");
ws.onopen = () => {{ window.result.ws = "open"; }};
ws.onmessage = () => {{ window.result.received += 1; }};
ws.onclose = () => {{ if (window.result.ws === "pending") window.result.ws = "refused"; }};
for (const img of document.images) {{
  img.onerror = () => {{ img.dataset.state = "error"; }};
}}
</script></body></html>"""


@contextlib.contextmanager
def another_origin(page: str):
    """A second web app on this machine (another loopback port) serving `page`."""
    import http.server
    import threading

    body = page.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_page_of_another_local_origin_gets_no_picture_even_with_the_cookie(browser):
    """localhost:OTHER and localhost:PORT are the same site: the browser sends the SameSite=Strict
    token cookie along. The page's WebSocket and its <img> of the MJPEG streams are refused all
    the same (Origin, Sec-Fetch-Site), and take no viewer slot."""
    token = "cross-Origin_7"
    with live(["a", "b"], token=token, max_viewers=2) as (web, _):
        browser.get(f"http://localhost:{web.port}/?token={token}")  # the user's own page: the cookie
        advancing(browser, ["a", "b"])
        with another_origin(EVIL_PAGE.format(port=web.port)) as elsewhere:
            browser.get(elsewhere)

            def refused() -> bool:
                state = browser.execute_script(
                    "return [window.result.ws, window.result.received,"
                    " Array.from(document.images).map((img) => img.dataset.state || img.naturalWidth)]")
                assert state[0] != "open" and state[1] == 0, f"another origin reads the cameras: {state}"
                return state[0] == "refused" and state[2] == ["error", "error"]

            wait_until(refused, 30, 0.2, "the other origin's WebSocket and images refused")
            counts = web.encode_counts()
            assert web.viewers == 0 and counts.get(("", "mosaic"), 0) == counts.get(("a", "hud"), 0) == 0
        browser.get(f"http://localhost:{web.port}/")  # the user's own page still works, cookie and all
        advancing(browser, ["a", "b"])
        browser.delete_all_cookies()


def test_a_malformed_camera_in_the_address_does_not_blank_the_page(browser):
    with live(["a", "b"]) as (web, _):
        browser.get(f"{web.url}#camera=%E0%A4%A")  # not valid percent-encoding: decodeURIComponent throws
        wait_until(lambda: len(tiles(browser)) == 2, 30, 0.2, "the tiles")
        advancing(browser, ["a", "b"])
        assert browser.execute_script(BIG_JS) is None
