"""Live runs against a real RTSP camera on 127.0.0.1 (gst-rtsp-server) and a real Triton.

The camera is stopped and started again, frozen with SIGSTOP, or never comes back; the
Triton server goes away mid-run. Every check reads real outputs: the recorded mp4's
frame codes, the JSONL, the accounting line. No timing asserts: timeouts are generous.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from streamer.server import free_port

from ..cameras import RtspCamera, Run, camera_clip, read_bottom_code
from ..helpers import inference_count, kill_server, read_jsonl, read_video, streamer, wait_until

pytestmark = pytest.mark.slow

COUNTS = re.compile(
    r"live: captured (\d+), shown (\d+), inferred (\d+), skipped for inference (\d+), failed (\d+)"
    r"(?:, dropped for display (\d+))?(?:, not shown \(run ending\) (\d+))?")


def live_counts(out: str) -> dict:
    match = COUNTS.search(out)
    assert match, f"no live accounting line in {out!r}"
    keys = ("captured", "shown", "inferred", "skipped", "failed", "dropped", "cut")
    counts = {k: int(v or 0) for k, v in zip(keys, match.groups())}
    # the accounting holds exactly
    assert counts["inferred"] + counts["skipped"] + counts["failed"] == counts["captured"], counts
    assert counts["shown"] + counts["dropped"] + counts["cut"] == counts["captured"], counts
    return counts


def recorded_codes(path: Path):
    return [read_bottom_code(img) for img in read_video(path).images]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    # 20 s at 25 fps: longer than any run below, so the camera never runs out by itself
    return camera_clip(tmp_path_factory.mktemp("camera") / "camera.mp4", 500)


def test_live_run_records_every_captured_frame_and_never_prints_the_password(tmp_path, clip, server_empty):
    out, dets = tmp_path / "rec.mp4", tmp_path / "d.jsonl"
    with RtspCamera(clip, user="viewer", password="s3cr3t-pw") as cam:
        result = streamer("run", cam.url, "--triton", server_empty.grpc_url, "--max-frames", 100,
                          "--out", out, "--detections", dets, timeout=180)
    assert result.returncode == 0, result.stderr
    counts = live_counts(result.stdout)
    assert counts["captured"] == counts["shown"] == 100
    assert counts["inferred"] > 0
    # every captured frame is in the recording, in order, none repeated
    assert recorded_codes(out) == list(range(100))
    records = read_jsonl(dets)
    frames = [r["frame"] for r in records]
    assert frames == sorted(set(frames)) and frames[-1] < 100
    assert len(records) == counts["inferred"] + counts["failed"]
    assert {r["status"] for r in records} == {"ok"}
    # credentials masked everywhere
    everything = result.stdout + result.stderr + dets.read_text()
    assert "s3cr3t-pw" not in everything and "viewer" not in everything
    assert f"rtsp://***@127.0.0.1:{cam.port}/cam" in result.stderr


def test_camera_restarted_mid_run_is_reconnected(tmp_path, clip, server_empty):
    out = tmp_path / "rec.mp4"
    before = inference_count(server_empty.http_url)
    cam = RtspCamera(clip).start()
    try:
        run = Run("run", cam.url, "--triton", server_empty.grpc_url, "--max-frames", 200, "--out", out)
        run.wait_for(": live,")
        wait_until(lambda: inference_count(server_empty.http_url) >= before + 5, 120, what="5 frames inferred")
        cam.stop()
        run.wait_for("dropped", timeout=60)
        cam.start()
        run.wait_for("is back (reconnect 1)", timeout=90)
        assert run.finish() == 0, run.stderr
    finally:
        cam.stop()
    counts = live_counts(run.out)
    assert counts["captured"] == 200
    assert "reconnects 1, offline" in run.out
    offline = float(re.search(r"offline ([\d.]+) s", run.out).group(1))
    assert offline > 0
    # the recording goes on after the reconnect: the camera starts its clip again from frame 0
    codes = recorded_codes(out)
    assert len(codes) == 200
    restarts = [i for i in range(1, len(codes)) if codes[i] < codes[i - 1]]
    assert len(restarts) == 1, codes
    first, second = codes[:restarts[0]], codes[restarts[0]:]
    assert first == list(range(len(first)))
    assert second == list(range(second[0], second[0] + len(second)))


def test_stalled_camera_trips_the_watchdog_and_the_run_recovers(tmp_path, clip, server_empty):
    before = inference_count(server_empty.http_url)
    with RtspCamera(clip) as cam:
        run = Run("run", cam.url, "--triton", server_empty.grpc_url, "--max-frames", 150,
                  "--stall-timeout", 2)
        run.wait_for(": live,")
        wait_until(lambda: inference_count(server_empty.http_url) >= before + 5, 120, what="5 frames inferred")
        cam.pause()  # the socket stays open, no data flows
        try:
            run.wait_for("stalled", timeout=30)
        finally:
            cam.resume()
        run.wait_for("is back", timeout=60)
        assert run.finish() == 0, run.stderr
    counts = live_counts(run.out)
    assert counts["captured"] == 150
    assert "reconnects 1," in run.out


def test_camera_that_never_returns_ends_the_run_with_a_clear_error(tmp_path, clip, server_empty):
    out = tmp_path / "rec.mp4"
    before = inference_count(server_empty.http_url)
    cam = RtspCamera(clip).start()
    try:
        run = Run("run", cam.url, "--triton", server_empty.grpc_url, "--out", out,
                  "--max-reconnect-time", 3)
        run.wait_for(": live,")
        wait_until(lambda: inference_count(server_empty.http_url) >= before + 3, 120, what="3 frames inferred")
    finally:
        cam.stop()
    assert run.finish(timeout=120) == 3, run.stderr
    assert f"error: rtsp://127.0.0.1:{cam.port}/cam did not come back within 3 s (--max-reconnect-time)" in run.stderr
    counts = live_counts(run.out)
    assert counts["captured"] > 0
    assert len(read_video(out).images) == counts["shown"]  # what was captured is kept


def test_wrong_path_and_wrong_password_fail_at_once_without_retrying(tmp_path, clip):
    """Errors retrying cannot fix are given up at once, before any server starts: one connection
    attempt each on the camera's server (no retry storm)."""
    with RtspCamera(clip, user="viewer", password="right-pw", log=tmp_path / "connections.log") as cam:
        started = time.monotonic()
        wrong_path = streamer("run", f"rtsp://viewer:right-pw@127.0.0.1:{cam.port}/nope", timeout=60)
        after_path = cam.connections
        wrong_password = streamer("run", f"rtsp://viewer:WRONG-pw@127.0.0.1:{cam.port}/cam", timeout=60)
        after_password = cam.connections
    assert time.monotonic() - started < 60
    assert wrong_path.returncode == 3 and "no stream at this path (404" in wrong_path.stderr
    assert wrong_password.returncode == 3 and "refused access" in wrong_password.stderr
    assert (after_path, after_password) == (1, 2), (after_path, after_password)
    for result in (wrong_path, wrong_password):
        assert "Traceback" not in result.stderr and "starting the embedded Triton" not in result.stderr
        assert "WRONG-pw" not in result.stderr and "right-pw" not in result.stderr


def test_a_camera_that_never_comes_up_is_given_up_after_max_reconnect_time(tmp_path, server_empty):
    port = free_port()  # nothing listens there
    result = streamer("run", f"rtsp://u:secret@127.0.0.1:{port}/cam", "--triton", server_empty.grpc_url,
                      "--max-reconnect-time", 3, "--out", tmp_path / "rec.mp4", timeout=120)
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("is not reachable yet") == 1 and "connection refused" in result.stderr
    assert f"error: rtsp://***@127.0.0.1:{port}/cam did not come up within 3 s (--max-reconnect-time); " \
           "last error: connection refused" in result.stderr
    assert "given up: not reachable for 3 s (connection refused)" in result.stdout
    assert "secret" not in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "rec.mp4").exists()  # nothing was captured: no empty recording


def test_ctrl_c_ends_the_wait_for_a_camera_not_up_yet(tmp_path, server_empty):
    run = Run("run", f"rtsp://127.0.0.1:{free_port()}/cam", "--triton", server_empty.grpc_url,
              "--out", tmp_path / "rec.mp4")
    try:
        run.wait_for("is not reachable yet", timeout=60)
        run.wait_for("inference: model", timeout=60)  # the server is checked while the camera is waited for
        run.proc.send_signal(signal.SIGINT)
        assert run.finish(timeout=60) == 130, run.stderr
    finally:
        run.kill()
    assert "Traceback" not in run.stderr and "live: captured 0," in run.out


def test_a_camera_still_booting_is_waited_for_and_recorded_from_its_first_frame(tmp_path, clip, server_empty):
    out, log = tmp_path / "rec.mp4", tmp_path / "d.jsonl"
    cam = RtspCamera(clip, log=tmp_path / "connections.log")  # its port is free until it starts
    run = Run("run", cam.url, "--triton", server_empty.grpc_url, "--out", out, "--detections", log,
              "--max-frames", 60, "--status-every", 1)
    try:
        run.wait_for("is not reachable yet", timeout=60)
        run.wait_for("(OFFLINE: connection refused, retrying", timeout=30)  # the status line says why
        cam.start()
        run.wait_for("is up (it was not reachable for", timeout=60)
        assert run.finish(timeout=120) == 0, run.stderr
    finally:
        run.kill()
        cam.stop()
    counts = live_counts(run.out)
    assert counts["captured"] == counts["shown"] == 60 and "reconnects 0," in run.out
    recorded = [read_bottom_code(img) for img in read_video(out).images]
    assert recorded == list(range(recorded[0], recorded[0] + 60))  # its first frames on, every one in order
    assert recorded[0] <= 3
    assert cam.connections == 1  # the camera saw one client: the retries before were refused at the door


def test_live_video_keeps_going_while_triton_is_away(tmp_path, clip, killable_server):
    dets = tmp_path / "d.jsonl"
    with RtspCamera(clip) as cam:
        run = Run("run", cam.url, "--triton", killable_server.grpc_url, "--detections", dets)
        try:
            run.wait_for(": live,")
            wait_until(lambda: inference_count(killable_server.http_url, "fasterrcnn_u8") >= 5, 120,
                       what="5 inferences")
            kill_server(killable_server)
            run.wait_for("unreachable", timeout=60)
            time.sleep(2)  # not a wait for anything: the outage lasts 2 s (over 25 frames) before the restart
            killable_server.restart()
            run.wait_for("Triton is back", timeout=90)
            wait_until(lambda: inference_count(killable_server.http_url, "fasterrcnn_u8") >= 5, 120,
                       what="inference to resume")
            run.proc.send_signal(signal.SIGINT)
            assert run.finish() == 130, run.stderr
        finally:
            run.kill()
    counts = live_counts(run.out)
    assert counts["dropped"] == 0 and counts["shown"] > 200  # the video never stopped
    assert "server reconnects 1" in run.out
    ok = [r["frame"] for r in read_jsonl(dets) if r["status"] == "ok"]
    gaps = [b - a for a, b in zip(ok, ok[1:])]
    outage = gaps.index(max(gaps))
    assert gaps[outage] >= 25, "no outage visible in the detections"  # over 1 s at 25 fps without results
    assert outage >= 3 and len(ok) - outage - 1 >= 3, "detections before and after the outage"
