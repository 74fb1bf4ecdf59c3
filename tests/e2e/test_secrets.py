"""A camera whose password holds '@' and whose URL carries a credential in its query: one real
run (RTSP camera, real Triton, the page, metrics, the report), the camera going away until the
run gives it up. Nothing the run prints, writes or serves holds the password, the user or the
query's token: stdout, stderr, `--summary`, the detections log, the metrics, `/api/state`, the
page and its files, the WebSocket's messages and the MJPEG streams. Where the URL is named, it
is masked (`rtsp://***@host:port/cam?token=***&user=***`).
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from streamer.server import free_port

from ..cameras import RtspCamera, Run, camera_clip
from ..helpers import wait_until
from ..webclient import Mjpeg, Socket, get

pytestmark = pytest.mark.slow

USER = "camuser7"
PASSWORD = "p@ss@w0rd-S3CRET"  # FFmpeg splits the login at the last '@': such passwords work
TOKEN = "Q-T0KEN-s3cr3t"
SECRETS = (USER, PASSWORD, "w0rd-S3CRET", "ss@w0rd", TOKEN)


def leaks(name: str, data) -> list:
    text = data if isinstance(data, str) else bytes(data).decode("latin-1")
    return [f"{secret!r} in {name}" for secret in SECRETS if secret in text]


def test_no_secret_anywhere_a_run_prints_writes_or_serves(tmp_path, server_empty):
    clip = camera_clip(tmp_path / "camera.mp4", 500)
    web, metrics = free_port(), free_port()
    summary, dets = tmp_path / "summary.json", tmp_path / "d.jsonl"
    seen = {}  # what a user, a scraper or a page could read: name -> text or bytes
    with RtspCamera(clip, user=USER, password=PASSWORD) as cam:
        url = f"{cam.url}?token={TOKEN}&user={USER}"  # the camera ignores the query; FFmpeg sends it
        masked = f"rtsp://***@127.0.0.1:{cam.port}/cam?token=***&user=***"
        run = Run("run", url, "--triton", server_empty.grpc_url, "--web", f"127.0.0.1:{web}",
                  "--metrics-port", metrics, "--summary", summary, "--detections", dets, "--out", tmp_path / "r.mp4",
                  "--status-every", "1", "--max-reconnect-time", "2")
        try:
            def up() -> bool:
                try:
                    status, _, body = get(web, "/api/state", timeout=2)
                except OSError:
                    return False
                cams = json.loads(body)["cameras"] if status == 200 else []
                return bool(cams) and cams[0]["up"] and cams[0]["frame"] is not None

            wait_until(up, 120, 0.2, "the camera up on the page")
            for path in ("/", "/static/app.js", "/static/style.css", "/api/state"):
                seen[path] = get(web, path)[2]
            with Socket(web) as page:
                page.until(lambda k, v: k == "binary", 20, "a picture")
                page.send({"type": "view", "camera": "cam1", "codec": "jpeg"})
                frames = []
                page.until(lambda k, v: k == "binary" and frames.append(v) is None and len(frames) >= 3, 20,
                           "full-size pictures")
                seen["websocket frames"] = b"".join(frames)
                seen["websocket texts"] = "".join(page.texts)
            for path in ("/camera/cam1.mjpg", "/mosaic.mjpg"):
                with Mjpeg(web, path) as stream:
                    parts = stream.parts()
                    seen[path] = b"".join(repr(h).encode() + body for h, body in (next(parts), next(parts)))
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as resp:
                seen["metrics"] = resp.read()
            assert b'camera="cam1"' in seen["metrics"]

            cam.stop()  # gone: OFFLINE on the page with its reason, then given up after 2 s

            def offline_reason():
                try:
                    status, _, body = get(web, "/api/state", timeout=2)
                except OSError:
                    return None
                return json.loads(body)["cameras"][0]["reason"] if status == 200 else None

            wait_until(lambda: (offline_reason() or "").startswith("OFFLINE"), 60, 0.1, "the camera offline")
            seen["/api/state offline"] = get(web, "/api/state")[2]
            code = run.finish()
        finally:
            run.kill()
    assert code == 3, run.stderr  # the only camera was given up
    seen["stdout"], seen["stderr"] = run.out, run.stderr
    seen["summary"], seen["detections"] = summary.read_text(), dets.read_text()
    found = [leak for name, data in seen.items() for leak in leaks(name, data)]
    assert not found, found
    # the URL is named where it helps, masked: the log, the camera's error in the report
    assert masked in run.stderr
    report = json.loads(seen["summary"])
    assert masked in report["streams"][0]["error"] and report["streams"][0]["camera"] == "failed"
    assert json.loads(seen["/api/state offline"])["cameras"][0]["reason"].startswith("OFFLINE")
