"""`--web` as users run it: `streamer watch` and `streamer run` serve the live page of their cameras.

The page itself is tested in a real Chromium against a scripted feed (test_web_browser.py); here
the real command feeds it: the API lists the cameras, their MJPEG streams carry the run's own
annotated frames (read back by their index codes), a token closes every route.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from streamer.server import free_port

from ..helpers import start_streamer, wait_until, write_clip
from ..webclient import Mjpeg, get

pytestmark = pytest.mark.slow


def state(port: int, headers=None):
    status, _, body = get(port, "/api/state", headers=headers)
    return status, (json.loads(body) if status == 200 else None)


def up(port: int, names, headers=None) -> bool:
    try:
        status, found = state(port, headers)
    except OSError:
        return False
    # up, and its first frame drawn (a camera is up from its connection, before its first frame)
    return status == 200 and {c["name"] for c in found["cameras"] if c["up"] and c["frame"] is not None} >= set(names)


def stop(proc) -> None:
    if proc.poll() is None:
        proc.terminate()
    proc.wait(timeout=60)


def test_watch_serves_every_camera_with_its_annotated_frames(tmp_path, server_empty):
    a, b = write_clip(tmp_path / "a.mp4", 50), write_clip(tmp_path / "b.mp4", 50)
    cameras = tmp_path / "cameras.yaml"
    port = free_port("127.0.0.1")
    cameras.write_text(f"web: {port}\ndefaults: {{loop: true}}\ncameras:\n  front: {{source: {a}}}\n"
                       f"  back: {{source: {b}}}\n")
    proc = start_streamer("watch", cameras, "--triton", server_empty.grpc_url, "--max-frames", "400",
                          "--status-every", "0")
    try:
        wait_until(lambda: up(port, ["front", "back"]), 120, what="both cameras up on the page")
        _, found = state(port)
        assert [c["name"] for c in found["cameras"]] == ["front", "back"]
        assert str(a) not in json.dumps(found)  # names only, never sources
        first = {c["name"]: c["frame"] for c in found["cameras"]}
        with Mjpeg(port, "/camera/back.mjpg") as stream:  # the drawn frames, with the HUD drawn in
            assert stream.status == 200
            images = stream.images(6)
        assert all(image.shape == (150, 200, 3) for image in images)
        assert any(not np.array_equal(images[0], image) for image in images[1:])  # pictures advance
        wait_until(lambda: all(c["frame"] != first[c["name"]] for c in state(port)[1]["cameras"]), 60,
                   what="both cameras' frame numbers to advance")
    finally:
        stop(proc)


def test_run_page_needs_the_token_from_the_environment(tmp_path, server_empty):
    clip = write_clip(tmp_path / "in.mp4", 300)
    port = free_port("127.0.0.1")
    env = {**os.environ, "STREAMER_WEB_TOKEN": "s3cret-token"}
    proc = start_streamer("run", clip, "--web", f"127.0.0.1:{port}", "--triton", server_empty.grpc_url,
                          env=env)
    bearer = {"Authorization": "Bearer s3cret-token"}
    try:
        wait_until(lambda: up(port, ["in.mp4"], bearer), 120, what="the file's camera on the page")
        for path in ("/", "/api/state", "/camera/in.mjpg"):
            assert get(port, path)[0] == 401, path
        assert get(port, "/", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert get(port, "/", headers=bearer)[0] == 200
    finally:
        stop(proc)


def test_a_web_port_in_use_is_a_clear_error(tmp_path, server_empty):
    import socket

    clip = write_clip(tmp_path / "in.mp4", 4)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start_streamer("run", clip, "--web", f"127.0.0.1:{port}", "--triton", server_empty.grpc_url)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 4, stderr
    assert f"{port}" in stderr and "Traceback" not in stderr


def test_a_camera_that_could_not_be_opened_still_has_its_tile(tmp_path, server_empty):
    clip = write_clip(tmp_path / "a.mp4", 50)
    cameras = tmp_path / "cameras.yaml"
    port = free_port("127.0.0.1")
    cameras.write_text(f"web: {port}\ncameras:\n  good: {{source: {clip}, loop: true}}\n"
                       "  gone: {source: 'rtsp://user:pw@127.0.0.1:9/x'}\n")
    proc = start_streamer("watch", cameras, "--triton", server_empty.grpc_url, "--max-frames", "300",
                          "--status-every", "0", "--max-reconnect-time", "3")
    try:
        wait_until(lambda: up(port, ["good"]), 120, what="the good camera up on the page")
        _, found = state(port)
        tiles = {c["name"]: c for c in found["cameras"]}
        assert set(tiles) == {"good", "gone"}
        assert tiles["gone"]["state"] == "offline" and not tiles["gone"]["up"]
        assert tiles["gone"]["reason"].startswith(("OFFLINE: connection refused", "given up"))

        def gone_reason() -> str:
            return {c["name"]: c for c in state(port)[1]["cameras"]}["gone"]["reason"] or ""

        wait_until(lambda: gone_reason().startswith("given up"), 60, what="the gone camera given up")
        assert gone_reason() == "given up: not reachable for 3 s (connection refused)"
        _, found = state(port)
        assert "pw@" not in json.dumps(found)
        proc.wait(timeout=180)  # the good camera's 300 frames
        assert proc.returncode == 3  # a camera could not be opened: an input problem at the end
    finally:
        stop(proc)
