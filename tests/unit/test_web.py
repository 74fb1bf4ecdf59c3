"""The web display over real HTTP on a free loopback port, fed by a fake run (no Triton, no browser).

Routes, the state JSON, MJPEG (parsed with http.client, pictures decoded with cv2.imdecode), the
WebSocket (websocket-client), the token / Host / Origin guard, viewer limits, and that nothing is
encoded while nobody watches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import socket
import time

from http.cookies import SimpleCookie

import numpy as np
import pytest
import websocket

from streamer.errors import PortInUse
from streamer.frames import Detections, Frame
from streamer.stages import View
from streamer.states import ViewState
from streamer.web import WebDisplay

from ..helpers import wait_until
from ..webclient import Mjpeg, Socket, decode_jpeg, get, parse_frame
from ..webfeed import FakeRun, coded_image, read_index, read_wall_ms

NAMES = {1: "person", 3: "car"}
SECRET_URL = "rtsp://admin:hunter2@10.0.0.9:554/stream1"
PASSWORD = "hunter2"
TILE, FULL = 0, 1


@contextlib.contextmanager
def serving(cameras=("front", "back yard"), fps=15.0, width=320, height=240, **options):
    options.setdefault("name_of", NAMES.get)
    with WebDisplay("127.0.0.1", 0, **options) as web:
        with FakeRun(web, cameras, fps=fps, width=width, height=height,
                     outputs={cameras[0]: ["out/front.mp4"]}) as run:
            wait_until(lambda: run.shows >= 2, 10, 0.02, "the fake run's first views")
            yield web, run


def state_of(port, **headers):
    status, _, body = get(port, "/api/state", headers)
    assert status == 200
    return json.loads(body)


def frames_by_camera(sock: Socket, count: int, kind: int = TILE, timeout: float = 30):
    """Binary messages of `kind` until every camera in the first state message sent `count`."""
    seen = {}
    names = None

    def enough(kind_, value):
        nonlocal names
        if kind_ == "text" and value.get("type") == "state" and names is None:
            names = [c["name"] for c in value["cameras"]]
        if kind_ == "binary":
            name, code, index, jpeg = parse_frame(value)
            if code == kind:
                seen.setdefault(name, []).append((index, jpeg))
        return names is not None and all(len(seen.get(n, [])) >= count for n in names)

    sock.until(enough, timeout, f"{count} pictures from every camera")
    return seen


# -- the page and its files ---------------------------------------------------------------------

def test_page_files_and_headers():
    with serving() as (web, _):
        status, headers, body = get(web.port, "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        page = body.decode()
        scripts = re.findall(r"<script\b[^>]*>", page)
        assert scripts and all('src="' in tag for tag in scripts)  # no inline script
        assert not re.search(r"<script\b[^>]*>\s*[^<\s]", page)
        assert "http://" not in page and "https://" not in page  # no CDN: works offline
        for path, kind in (("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")):
            status, headers, body = get(web.port, path)
            assert status == 200 and headers["Content-Type"].startswith(kind) and body
            assert b"http://" not in body and b"https://" not in body
        for path in ("/", "/static/app.js", "/api/state", "/nothing", "/static/nothing.js"):
            _, headers, _ = get(web.port, path)
            assert headers["Cache-Control"] == "no-store"
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "no-referrer"
            assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
            assert "script-src 'self'" in headers["Content-Security-Policy"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD", "OPTIONS"])
def test_get_only(method):
    with serving() as (web, _):
        status, headers, _ = get(web.port, "/api/state", method=method)
        assert status == 405 and headers["Allow"] == "GET"
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_api_state_names_figures_detections_and_outputs():
    with serving() as (web, run):
        wait_until(lambda: state_of(web.port)["cameras"][0]["frame"], 10, 0.05, "a frame in the state")
        state = state_of(web.port)
        assert [c["name"] for c in state["cameras"]] == ["front", "back yard"]
        front = state["cameras"][0]
        assert front["state"] == "up" and front["up"] is True and front["reason"] is None
        assert front["display_fps"] == 15.0 and front["detections_per_s"] == 2.5
        assert front["detection_age_s"] == 0.4 and front["size"] == [320, 240]
        assert front["tracking"] is True
        assert front["detections"][0] == {"label": 1, "name": "person", "score": 0.9,
                                          "box": [10.0, 10.0, 60.0, 60.0], "track_id": 7}
        assert "track_id" not in front["detections"][1] and front["detections"][1]["name"] == "car"
        assert front["outputs"] == ["out/front.mp4"]
        assert state["max_viewers"] == 8 and state["viewers"] == 0 and state["ended"] is False

        run.offline("back yard", f"OFFLINE: {SECRET_URL} stopped answering")
        wait_until(lambda: state_of(web.port)["cameras"][1]["state"] == "offline", 10, 0.05, "offline")
        back = state_of(web.port)["cameras"][1]
        assert back["up"] is False and "rtsp://***@10.0.0.9" in back["reason"]
        run.online("back yard")
        wait_until(lambda: state_of(web.port)["cameras"][1]["state"] == "up", 10, 0.05, "back up")
        run.end()
        wait_until(lambda: all(c["state"] == "ended" for c in state_of(web.port)["cameras"]), 10, 0.05, "ended")


def test_a_camera_that_never_came_up_is_listed_with_its_reason():
    with WebDisplay("127.0.0.1", 0) as web, FakeRun(web, ["up", "never"], never_up=["never"]) as run:
        wait_until(lambda: run.shows >= 2, 10, 0.02, "views")
        never = state_of(web.port)["cameras"][1]
        assert never["state"] == "offline" and never["frame"] is None and never["size"] is None
        assert "cannot connect" in never["reason"]
        with Mjpeg(web.port, "/camera/never.mjpg") as stream:  # a picture that says so
            image = stream.images(1)[0]
            assert image.shape[1] >= 320


# -- MJPEG ---------------------------------------------------------------------------------------

def test_camera_mjpeg_frames_advance_with_the_right_boundary():
    with serving(width=640, height=360) as (web, _):
        with Mjpeg(web.port, "/camera/back%20yard.mjpg") as stream:
            assert stream.status == 200 and stream.boundary
            assert stream.response.getheader("Cache-Control") == "no-store"
            images = stream.images(6)
        assert all(img.shape == (360, 640, 3) for img in images)  # full size
        indexes = [read_index(img) for img in images]
        assert None not in indexes and indexes == sorted(indexes) and len(set(indexes)) == len(indexes)
        assert all(read_wall_ms(img) is not None for img in images)
        status, _, _ = get(web.port, "/camera/nobody.mjpg")
        assert status == 404


def test_mosaic_mjpeg():
    with serving(("a", "b", "c")) as (web, _):
        with Mjpeg(web.port, "/mosaic.mjpg") as stream:
            images = stream.images(3)
        for image in images:
            assert image.shape[1] <= 1280 and image.shape[0] <= 720 and image.shape[1] >= 640


# -- the WebSocket -------------------------------------------------------------------------------

def test_websocket_carries_every_camera_scaled_tiles_and_the_enlarged_camera_full_size():
    with serving(("wide", "small"), width=1280, height=720) as (web, run):
        with Socket(web.port) as sock:
            kind, first = sock.until(lambda k, v: k == "text", 10, "the state")
            assert first["type"] == "state" and [c["name"] for c in first["cameras"]] == ["wide", "small"]
            seen = frames_by_camera(sock, 3)
            for name, frames in seen.items():
                indexes = [i for i, _ in frames]
                assert indexes == sorted(indexes) and len(set(indexes)) == len(indexes)
                for index, jpeg in frames:
                    image = decode_jpeg(jpeg)
                    assert image.shape == (360, 640, 3)  # 1280x720 scaled to the 640 px tile
                    assert read_index(image) == index % 4096
            sock.send({"type": "view", "camera": "small"})

            def full(kind, value):
                return kind == "binary" and parse_frame(value)[1] == FULL

            _, message = sock.until(full, 20, "a full-size picture")
            name, _, index, jpeg = parse_frame(message)
            assert name == "small" and decode_jpeg(jpeg).shape == (720, 1280, 3)
            # from now on only the enlarged camera's pictures come (a few tiles may be under way)
            later = []
            sock.until(lambda k, v: k == "binary" and later.append(parse_frame(v)[:2]) is None and len(later) >= 12,
                       20, "more pictures")
            assert later[-6:] == [("small", FULL)] * 6
            sock.send({"type": "view", "camera": None})
            sock.until(lambda k, v: k == "binary" and parse_frame(v)[:2] == ("wide", TILE), 20, "tiles again")


def test_nothing_is_encoded_while_nobody_watches_and_one_encode_serves_every_viewer():
    with serving(("a", "b"), fps=20) as (web, run):
        shows = run.shows
        wait_until(lambda: run.shows >= shows + 10, 10, 0.02, "frames shown to nobody")
        assert web.encodes == 0 and web.viewers == 0
        with Socket(web.port) as one, Socket(web.port) as two:
            start = run.camera("a").index
            frames_by_camera(one, 5)
            frames_by_camera(two, 5)
            end = run.camera("a").index
            counts = web.encode_counts()
            # one encode per frame per camera and size, shared by both viewers: never more than frames
            assert 0 < counts[("a", "tile")] <= end - start + 2
            assert set(counts) == {("a", "tile"), ("b", "tile")}
        wait_until(lambda: web.viewers == 0, 10, 0.02, "the viewers to leave")
        idle = web.encodes
        shows = run.shows
        wait_until(lambda: run.shows >= shows + 10, 10, 0.02, "frames shown to nobody again")
        assert web.encodes == idle


def test_a_slow_viewer_skips_frames_instead_of_queueing():
    with serving(("a",), fps=30, width=640, height=360) as (web, run):
        with Socket(web.port) as slow:
            slow.until(lambda k, v: k == "binary", 10, "a first picture")
            # read nothing while the camera goes on; the server must not queue every frame
            frames = run.camera("a").index
            wait_until(lambda: run.camera("a").index >= frames + 30, 20, 0.02, "30 more frames")
            received = []

            def collect(kind, value):
                if kind == "binary":
                    received.append(parse_frame(value)[2])
                return kind == "binary" and received[-1] >= run.camera("a").index - 3

            slow.until(collect, 20, "the newest frame")
            assert len(received) < 20  # at most one waiting per camera, plus what was in the socket


def test_the_end_of_the_run_reaches_the_page():
    web = WebDisplay("127.0.0.1", 0).start()
    try:
        with FakeRun(web, ["a"]) as run:
            sock = Socket(web.port)
            sock.until(lambda k, v: k == "binary", 10, "a picture")
            run.end()
            shows = run.shows
            wait_until(lambda: run.shows >= shows + 2, 10, 0.02, "the ended views shown")
    finally:
        web.stop()
    _, end = sock.until(lambda k, v: k == "text" and v.get("type") == "end", 10, "the end message")
    assert "ended" in end["reason"]
    ended = [json.loads(t) for t in sock.texts if json.loads(t).get("type") == "state"][-1]
    assert ended["ended"] is True and ended["cameras"][0]["state"] == "ended"
    kind, (code, _) = sock.until(lambda k, v: k == "close", 10, "the close")
    assert code == 1001
    sock.close()


# -- viewers -------------------------------------------------------------------------------------

def test_ten_viewers_against_eight_two_refused_and_closing_frees_them():
    with serving(("a",), fps=10, max_viewers=8) as (web, _):
        sockets = [Socket(web.port) for _ in range(10)]
        try:
            outcomes = []
            for sock in sockets:
                kind, value = sock.until(lambda k, v: k in ("text", "close"), 10, "state or close")
                outcomes.append(kind)
            assert outcomes.count("text") == 8 and outcomes.count("close") == 2
            refused = [s for s, o in zip(sockets, outcomes) if o == "close"]
            for sock in refused:
                code, reason = sock.closed
                assert code == 1013 and "too many viewers" in reason and "8" in reason
            assert web.viewers == 8
            with Mjpeg(web.port, "/mosaic.mjpg") as stream:
                assert stream.status == 503
                assert b"too many viewers" in stream.response.read()
            accepted = [s for s, o in zip(sockets, outcomes) if o == "text"]
            for sock in accepted[:2]:
                sock.close()
            wait_until(lambda: web.viewers == 6, 10, 0.02, "two viewers to leave")
            with Socket(web.port) as again, Mjpeg(web.port, "/camera/a.mjpg") as player:
                assert again.until(lambda k, v: k in ("text", "close"), 10, "state")[0] == "text"
                assert player.status == 200 and player.images(1)
                assert web.viewers == 8
        finally:
            for sock in sockets:
                sock.close()
        wait_until(lambda: web.viewers == 0, 10, 0.02, "every viewer to leave")


# -- security ------------------------------------------------------------------------------------

TOKEN = "t0ken-Abc_123"


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/api/state", "/ws", "/camera/front.mjpg", "/mosaic.mjpg"])
def test_with_a_token_every_route_answers_401_without_it(path):
    with serving(token=TOKEN) as (web, _):
        status, headers, _ = get(web.port, path)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert headers["X-Content-Type-Options"] == "nosniff"
        status, _, _ = get(web.port, path, {"Authorization": "Bearer wrong"})
        assert status == 401
        status, _, _ = get(web.port, f"{path}?token=wrong")
        assert status == 401
        if path == "/ws":
            with pytest.raises(websocket.WebSocketBadStatusException) as refused:
                Socket(web.port, path)
            assert refused.value.status_code == 401


def test_the_token_as_bearer_query_and_cookie():
    with serving(token=TOKEN) as (web, _):
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert get(web.port, "/api/state", bearer)[0] == 200
        assert get(web.port, f"/api/state?token={TOKEN}")[0] == 200  # scripts, VLC: no redirect
        with Mjpeg(web.port, f"/camera/front.mjpg?token={TOKEN}") as stream:
            assert stream.status == 200 and stream.images(1)
        status, headers, _ = get(web.port, f"/?token={TOKEN}&x=1")
        assert status == 303 and headers["Location"] == "/?x=1"
        cookie = headers["Set-Cookie"]
        assert cookie.startswith(f"streamer_token_{web.port}={TOKEN};")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        jar = {"Cookie": f"streamer_token_{web.port}={TOKEN}"}
        assert get(web.port, "/", jar)[0] == 200
        assert get(web.port, "/", {"Cookie": f"streamer_token_{web.port + 1}={TOKEN}"})[0] == 401
        with Socket(web.port, headers=[f"Cookie: streamer_token_{web.port}={TOKEN}"]) as sock:
            assert sock.until(lambda k, v: k == "text", 10, "state")[1]["type"] == "state"
        with Socket(web.port, headers=[f"Authorization: Bearer {TOKEN}"]) as sock:
            assert sock.until(lambda k, v: k == "text", 10, "state")[1]["type"] == "state"


def test_wrong_host_and_origin_are_refused():
    with serving(token=TOKEN, allowed_hosts=["cams.example.org"]) as (web, _):
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        for host in ("evil.example", f"evil.example:{web.port}", "127.0.0.2"):
            for path in ("/", "/api/state", "/mosaic.mjpg", "/ws"):
                status, headers, _ = get(web.port, path, {**bearer, "Host": host})
                assert status == 403, (host, path)
                assert headers["Cache-Control"] == "no-store"
        for host in (f"localhost:{web.port}", "localhost:1234", f"[::1]:{web.port}", "cams.example.org:443"):
            assert get(web.port, "/api/state", {**bearer, "Host": host})[0] == 200, host
        # a WebSocket's Origin: the request's own scheme and Host, or an allowed host; another
        # loopback name or port is another origin (a local web app must not read the cameras)
        for origin in ("http://evil.example", f"http://localhost:{web.port}", f"http://127.0.0.1:{web.port + 1}",
                       f"https://127.0.0.1:{web.port}", "null"):
            with pytest.raises(websocket.WebSocketBadStatusException) as refused:
                Socket(web.port, headers=[f"Authorization: Bearer {TOKEN}"], origin=origin)
            assert refused.value.status_code == 403, origin
        for origin in (f"http://127.0.0.1:{web.port}", "https://cams.example.org"):
            with Socket(web.port, headers=[f"Authorization: Bearer {TOKEN}"], origin=origin) as sock:
                assert sock.until(lambda k, v: k == "text", 10, "state")[0] == "text"


def test_no_source_url_or_password_anywhere():
    with serving(("front", "back")) as (web, run):
        run.offline("back", f"OFFLINE: {SECRET_URL} refused the connection")
        wait_until(lambda: state_of(web.port)["cameras"][1]["state"] == "offline", 10, 0.05, "offline")
        texts = [get(web.port, p)[2].decode() for p in ("/", "/static/app.js", "/api/state")]
        with Socket(web.port) as sock:
            sock.until(lambda k, v: k == "binary", 20, "a picture")
            sock.send({"type": "view", "camera": "back"})
            sock.until(lambda k, v: k == "text", 20, "another state")
            texts += sock.texts
        assert any("rtsp://***@10.0.0.9" in t for t in texts)  # the reason is there, masked
        for text in texts:
            assert PASSWORD not in text and "admin:" not in text


# -- the port ------------------------------------------------------------------------------------

def test_a_port_in_use_is_a_clear_error_and_stop_frees_the_port():
    with WebDisplay("127.0.0.1", 0) as web:
        port = web.port
        with pytest.raises(PortInUse) as caught:
            WebDisplay("127.0.0.1", port).start()
        assert f"web port {port}" in str(caught.value) and "--web" in str(caught.value)
        assert caught.value.exit_code == PortInUse("x").exit_code
    with socket.socket() as probe:  # free again at once
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    again = WebDisplay("127.0.0.1", port).start()
    again.stop()


def test_show_returns_true_and_costs_nothing_before_start():
    web = WebDisplay("127.0.0.1", 0)
    assert web.show([View("a", coded_image(0, 0), ViewState.UP)]) is True
    assert web.encodes == 0


def test_tiles_keep_to_their_frame_rate_cap():
    with serving(("a",), fps=30) as (web, run):
        start = time.monotonic()
        with Socket(web.port) as sock:
            frames = run.camera("a").index
            wait_until(lambda: run.camera("a").index >= frames + 45, 30, 0.02, "45 frames")
            sock.until(lambda k, v: k == "binary", 10, "a picture")
        wait_until(lambda: web.viewers == 0, 10, 0.02, "the viewer to leave")
        elapsed = time.monotonic() - start
        # a token bucket: at most 1.5 pictures at once, then 15 a second (never the camera's 30)
        assert web.encode_counts()[("a", "tile")] <= 1.5 + 15 * elapsed


# -- hardening: origins, tokens with '+', a proxy's TLS, broken views, masked names -------------

def test_pictures_and_state_are_refused_to_pages_of_other_origins_without_taking_a_slot():
    """What a browser sends for `<img src=".../mosaic.mjpg">` or fetch() on another local port."""
    with serving(("a",), max_viewers=2) as (web, _):
        image = {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image",
                 "Referer": "http://localhost:3000/"}
        for _ in range(3):  # more than the viewer limit: none of them holds a slot
            for path in ("/mosaic.mjpg", "/camera/a.mjpg"):
                with Mjpeg(web.port, path, image) as refused:
                    assert refused.status == 403 and b"own origin" in refused.response.read(), path
        assert get(web.port, "/api/state", {"Origin": "http://localhost:3000"})[0] == 403
        assert get(web.port, "/api/state", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"})[0] == 403
        assert web.viewers == 0 and web.encodes == 0
        # the page itself, a link to a stream and players that are not browsers are served
        assert get(web.port, "/", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate",
                                   "Sec-Fetch-Dest": "document"})[0] == 200
        own = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
        with Mjpeg(web.port, "/mosaic.mjpg", own) as mine, Mjpeg(web.port, "/camera/a.mjpg") as vlc:
            assert mine.status == 200 and vlc.status == 200 and mine.images(1) and vlc.images(1)


@pytest.mark.parametrize("token", ["a+b/c==", "+/+/0123456789abcdefABCDEF=="])
def test_a_base64_token_works_in_the_address_raw_or_encoded(token):
    with serving(("a",), token=token) as (web, _):
        encoded = token.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
        name = f"streamer_token_{web.port}"
        for given in (token, encoded):
            assert get(web.port, f"/api/state?token={given}")[0] == 200, given
            status, headers, _ = get(web.port, f"/?token={given}")
            assert status == 303
            cookie = SimpleCookie(headers["Set-Cookie"])  # quoted: "a+b/c==", as a browser keeps it
            assert cookie[name].value == token
            assert get(web.port, "/api/state", {"Cookie": f"{name}={cookie[name].coded_value}"})[0] == 200
        assert get(web.port, f"/api/state?token={token.replace('+', '%20')}")[0] == 401


def test_the_cookie_is_secure_behind_a_tls_proxy_on_an_allowed_host_only():
    with serving(("a",), token=TOKEN, allowed_hosts=["cams.example.org"]) as (web, _):
        proxied = {"Host": "cams.example.org", "X-Forwarded-Proto": "https"}
        status, headers, _ = get(web.port, f"/?token={TOKEN}", proxied)
        assert status == 303 and "Secure" in headers["Set-Cookie"]
        # the browser's origin is https://cams.example.org: its WebSocket is the page's own
        with Socket(web.port, headers=[f"Authorization: Bearer {TOKEN}", "X-Forwarded-Proto: https"],
                    origin="https://cams.example.org") as sock:
            assert sock.until(lambda k, v: k == "text", 10, "state")[0] == "text"
        # nobody in front of a loopback name: the header is not believed
        status, headers, _ = get(web.port, f"/?token={TOKEN}", {"X-Forwarded-Proto": "https"})
        assert status == 303 and "Secure" not in headers["Set-Cookie"]
        status, headers, _ = get(web.port, f"/?token={TOKEN}", {"Host": "cams.example.org"})
        assert status == 303 and "Secure" not in headers["Set-Cookie"]


def nan_view(index: int) -> View:
    broken = Detections(np.array([[np.nan, 0, 10, 10]], np.float32), np.array([1]), np.array([0.9], np.float32))
    return dataclasses.replace(good_view(index), detections=broken)


def good_view(index: int) -> View:
    image = coded_image(index, 0)
    return View("a", image, ViewState.UP, frame=Frame(index, None, None, 0.0, image))


def test_a_view_that_cannot_be_sent_holds_no_viewer_slot_and_the_state_recovers(caplog):
    """A box that is not a number (the codecs drop them; here a view bypasses them) cannot be
    written as JSON: every page that tries is refused, none keeps a slot, and the state goes on
    once the views are good again."""
    with WebDisplay("127.0.0.1", 0, max_viewers=2) as web:
        web.show([nan_view(0)])
        for _ in range(4):  # twice the limit: a slot leaked per try would refuse the last ones as too many
            with pytest.raises(websocket.WebSocketBadStatusException) as refused:
                Socket(web.port, timeout=5)
            assert refused.value.status_code == 500
        assert web.viewers == 0
        web.show([good_view(1)])
        with Socket(web.port) as sock:
            sock.until(lambda k, v: k == "text" and v["cameras"][0]["frame"] == 1, 10, "the state")
            web.show([nan_view(2)])
            wait_until(lambda: "cannot send the cameras' state" in caplog.text, 10, 0.02, "the state loop to meet it")
            web.show([good_view(3)])  # the state loop survived the view it could not send
            sock.until(lambda k, v: k == "text" and v["cameras"][0]["frame"] == 3, 10, "the state again")
        wait_until(lambda: web.viewers == 0, 10, 0.02, "the viewer to leave")


def test_the_mosaic_draws_masked_names():
    from streamer.mosaic import Tile, compose, tile_size_to_fit

    secret = "rtsp://admin:p@ss@10.0.0.9/s"
    image = coded_image(3, 0)
    with WebDisplay("127.0.0.1", 0, mosaic_size=(640, 360)) as web:
        web.show([View(secret, image, ViewState.UP)])
        with Mjpeg(web.port, "/mosaic.mjpg") as stream:
            drawn = stream.images(1)[0].astype(int)
    size = tile_size_to_fit(1, (640, 360))
    masked = compose([Tile(image, "rtsp://***@10.0.0.9/s", (), None)], size).astype(int)
    raw = compose([Tile(image, secret, (), None)], size).astype(int)
    text = (masked != raw).any(axis=2)  # where the two names differ (the title bar's text)
    assert text.sum() > 100
    assert abs(drawn - masked)[text].mean() < abs(drawn - raw)[text].mean() / 2
