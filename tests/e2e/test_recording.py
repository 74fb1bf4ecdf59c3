"""Nothing lost in a crash: the real `streamer` killed with SIGKILL by PID at seeded moments, its
outputs read back with PyAV (frame codes) and played by Chromium; `--resume` and `streamer recover`;
a full disk (RLIMIT_FSIZE) in a file run and in a live run that goes on and records again once the
limit is lifted; a real RTSP camera recorded in 2 s segments (boundaries, a gap, retention, the
index). The model is the sprite detector (tests/sprites.py: meaningful boxes, tracks that matter).
No timing asserts: waits poll with deadlines."""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import time
import urllib.request
from pathlib import Path
from typing import Callable, List

import av
import numpy as np
import pytest

from streamer.recording.lines import read_json_lines
from streamer.recording.segments import SegmentIndex
from streamer.server import free_port, start_on_free_ports

from .. import sprites as S
from ..browser import chromium
from ..cameras import RtspCamera, Run, camera_clip, read_bottom_code
from ..helpers import read_jsonl, read_video, start_streamer, streamer, wait_until

pytestmark = pytest.mark.slow

FRAMES = 150  # 6 s of the sprite camera scene at 25 fps: about 6 resume points
MEAN_PIXEL_TOL = 6.0  # a resumed part is encoded by a fresh x264 from its keyframe: equal within this (0-255)


@pytest.fixture(scope="module")
def sprite_server(tmp_path_factory):
    # the sprite detector; Triton's batcher holds a lone request 40 ms, so a run takes a few seconds
    repo = S.export_sprites(tmp_path_factory.mktemp("repo_recording"), max_queue_delay_us=40_000)
    server = start_on_free_ports(repo, threads=1, startup_timeout=300)
    yield server
    server.stop()
    server.cleanup()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sprite_server):
    """The clip, the run's flags, and what an uninterrupted run writes (video, log)."""
    root = tmp_path_factory.mktemp("recording_reference")
    clip = root / "scene.mp4"
    S.write_scene(clip, S.camera(FRAMES))
    flags = ["--triton", sprite_server.grpc_url, "--infer-every", "3"]
    result = streamer("run", clip, "--out", root / "full.mp4", "--detections", root / "full.jsonl", *flags, timeout=300)
    assert result.returncode == 0, result.stderr
    records = read_jsonl(root / "full.jsonl")
    assert sum(r["status"] == "tracked" and bool(r["detections"]) for r in records) > 50  # tracked boxes to keep
    return clip, flags, read_video(root / "full.mp4"), records


def partial_records(folder: Path) -> int:
    found = list(folder.glob(".a.partial-*.jsonl"))
    return len(read_json_lines(found[0]).records) if found else 0


def killed_at(args: List[str], folder: Path, records: int) -> str:
    """Start `streamer run ARGS`, SIGKILL it by PID once its log holds `records` records; its stderr."""
    proc = start_streamer(*args, cwd=folder)
    try:
        wait_until(lambda: partial_records(folder) >= records or proc.poll() is not None, 120, interval=0.005,
                   what=f"{records} records")
        assert proc.poll() is None, f"the run ended before it was killed:\n{proc.stderr.read()}"
        os.kill(proc.pid, signal.SIGKILL)
        return proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def same_video(got, want, frames: int) -> None:
    assert got.codes == want.codes[:frames] == list(range(frames))
    assert got.pts == want.pts[:frames]
    worst = max(float(np.abs(a.astype(int) - b.astype(int)).mean()) for a, b in zip(got.images, want.images))
    assert worst <= MEAN_PIXEL_TOL, worst


def test_a_run_killed_three_times_resumes_to_the_uninterrupted_output(tmp_path, reference):
    clip, flags, full, records = reference
    args = ["run", clip, "--out", "a.mp4", "--detections", "a.jsonl", *flags]
    # A kill loses at most ~1.4 s (36 frames): kills 42+ records apart each leave a later resume point.
    rng = random.Random(23)
    first, second, third = rng.randint(42, 50), rng.randint(92, 100), rng.randint(138, 146)
    killed_at(args, tmp_path, first)
    # the partials belong to other options: one line, exit 2, nothing touched
    refused = streamer(*args, "--resume", "--threshold", "0.6", cwd=tmp_path, timeout=120)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "cannot be continued: it was written with other options (threshold 0.5 then, 0.6 now)" in refused.stderr
    starts = []
    for records_at in (second, third):
        err = killed_at(args + ["--resume"], tmp_path, records_at)
        starts.append(int(err.split("resuming at frame ")[1].split()[0]))
        if records_at == second:  # what a kill leaves, finished as it is by `streamer recover` (on a copy)
            copy = tmp_path / "copy"
            shutil.copytree(tmp_path, copy, ignore=shutil.ignore_patterns("copy"))
            result = streamer("recover", copy / "a.mp4", timeout=120)
            assert result.returncode == 0, result.stderr
            kept = read_video(copy / "a.mp4")
            same_video(kept, full, len(kept.codes))
            assert len(kept.codes) >= first and read_jsonl(copy / "a.jsonl") == records[:len(read_jsonl(copy / "a.jsonl"))]
            assert sorted(p.name for p in copy.iterdir()) == ["a.jsonl", "a.mp4"]
    result = streamer(*args, "--resume", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    starts.append(int(result.stderr.split("resuming at frame ")[1].split()[0]))
    assert 0 < starts[0] <= first < starts[1] <= second < starts[2] <= third, (first, second, third, starts)
    # every frame once, in order, the same timestamps and the same detections, track ids included
    assert read_jsonl(tmp_path / "a.jsonl") == records
    same_video(read_video(tmp_path / "a.mp4"), full, FRAMES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "a.mp4", "copy"]


def file_limit(size: int) -> Callable[[], None]:
    """A preexec_fn: no file of the child may grow past `size` bytes (a full disk, as the child sees
    it). The soft limit only: the test lifts it later (space returns)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))


def test_a_full_disk_stops_a_file_run_with_exit_5_keeping_what_was_written(tmp_path, reference):
    clip, flags, full, records = reference
    # gRPC: the limit would hit the shared-memory regions too (files in /dev/shm), which a full disk does not
    args = ["run", clip, "--out", "a.mp4", "--detections", "a.jsonl", "--transport", "grpc", *flags]
    # the video (about 350 KB) outgrows the limit; the log and the checkpoints (about 120 KB) do not
    proc = start_streamer(*args, cwd=tmp_path, preexec_fn=file_limit(200_000))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 5, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot write a.mp4: File too large" in errors[0], err
    assert "--resume" in errors[0] and "Traceback" not in err
    partial = next(tmp_path.glob(".a.partial-*.mp4"))
    kept = read_video(partial)  # whole fragments only: it plays as it is
    assert 0 < len(kept.codes) < FRAMES and kept.codes == list(range(len(kept.codes)))
    # space again: the same command with --resume finishes it as an uninterrupted run would have
    result = streamer(*args, "--resume", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert int(result.stderr.split("resuming at frame ")[1].split()[0]) > 0
    assert read_jsonl(tmp_path / "a.jsonl") == records
    same_video(read_video(tmp_path / "a.mp4"), full, FRAMES)


# -- live -----------------------------------------------------------------------------------------------

def api_state(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=2) as resp:
            return json.loads(resp.read())["cameras"][0]
    except (OSError, ValueError, KeyError, IndexError):
        return {}


@pytest.fixture(scope="module")
def camera_file(tmp_path_factory) -> Path:
    return camera_clip(tmp_path_factory.mktemp("rec_camera") / "camera.mp4", 500)  # 20 s at 25 fps


def live_env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "STREAMER_WEB_TOKEN"}


# The sprite detector finds boxes in the camera's gradient; live tests read frame codes, not boxes:
# a threshold above its fixed score (0.9) draws none over the codes.
NO_BOXES = ("--threshold", "0.95")


def test_a_live_run_goes_on_when_its_disk_fills_and_records_again_when_space_returns(tmp_path, camera_file,
                                                                                     sprite_server):
    port = free_port()
    folder, summary = tmp_path / "cam1", tmp_path / "summary.json"
    with RtspCamera(camera_file) as cam:
        # ends by itself after 18 s (a clean end: the report), time for a retry (every 5 s) after the limit
        # is lifted even on a loaded machine; gRPC, as the limit would hit /dev/shm too
        run = Run("run", cam.url, "--out", folder, "--segment", "2", "--triton", sprite_server.grpc_url,
                  "--transport", "grpc", *NO_BOXES, "--max-frames", "450", "--web", f"127.0.0.1:{port}", "--status-every", "1",
                  "--summary", summary, env=live_env(), preexec_fn=file_limit(8_000))
        try:
            run.wait_for("recording stopped")
            stopped = [line for line in run.err_lines if "recording stopped" in line]
            assert len(stopped) == 1 and "File too large" in stopped[0] and str(folder) in stopped[0], stopped
            state = {}
            wait_until(lambda: state.update(api_state(port)) or (state.get("recording") or {}).get("state") == "retrying",
                       60, what="the page saying the recording is retrying")
            assert state["up"] and "File too large" in state["recording"]["reason"]
            shown = state["frame"]
            wait_until(lambda: (api_state(port).get("frame") or 0) > shown + 25, 60, what="the video going on")
            run.wait_for("recording retrying: File too large")  # the status line says it too
            resource.prlimit(run.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            run.wait_for("recording again")
            code = run.finish()
        finally:
            run.kill()
    report = json.loads(summary.read_text())["streams"][0]
    assert code == 5, run.stderr  # frames went unrecorded: an output problem, said at the end
    assert report["recording"]["state"] == "recording" and report["recording"]["not_recorded"] > 25
    assert "File too large" in report["recording"]["last_failure"]
    assert "frame(s) were not recorded (File too large" in run.stderr
    assert len(SegmentIndex(folder).entries()) >= 2, "recorded again once space returned"
    for entry in SegmentIndex(folder).entries():
        codes = [read_bottom_code(image) for image in read_video(folder / entry["file"]).images]
        assert codes == list(range(codes[0], codes[0] + len(codes))) and len(codes) == entry["frames"]


def play_to_the_end(driver, path: Path, page: Path) -> dict:
    """Play a file in a <video> at 4x on a page of the same file:// tree; what it did (ended, or the error)."""
    page.write_text("<!doctype html><html><body></body></html>")
    driver.get(page.as_uri())
    return driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const v = document.createElement('video');
        v.muted = true; v.src = arguments[0];
        v.addEventListener('loadedmetadata', () => { v.playbackRate = 4; v.play(); });
        v.addEventListener('ended', () => done({ended: true, at: v.currentTime, duration: v.duration}));
        v.addEventListener('error', () => done({ended: false, error: v.error && v.error.message}));
        document.body.appendChild(v);
        setTimeout(() => done({ended: false, at: v.currentTime}), 30000);
    """, path.as_uri())


def test_live_segments_keep_every_frame_across_boundaries_and_survive_a_kill(tmp_path, camera_file, sprite_server):
    folder = tmp_path / "recordings" / "cam1"
    folder.parent.mkdir()
    with RtspCamera(camera_file) as cam:
        run = Run("run", cam.url, "--out", folder, "--segment", "2", "--retain", "150KB", "--detections",
                  tmp_path / "cam1.jsonl", "--triton", sprite_server.grpc_url, *NO_BOXES, "--status-every", "0",
                  env=live_env())
        try:
            wait_until(lambda: len(SegmentIndex(folder).entries()) >= 3, 90, what="three segments")
            cam.stop()  # the camera goes away for 3 s (a gap is over 2 s without frames), then a new segment
            away = time.monotonic()
            run.wait_for("dropped")
            wait_until(lambda: time.monotonic() - away > 3, 10, what="3 s without the camera")
            cam.start()
            wait_until(lambda: any(e["gap_before_s"] for e in SegmentIndex(folder).entries()), 90,
                       what="the first segment after the gap")
            # kill it inside a segment with a fragment on disk, well before the segment's end at the even second
            wait_until(lambda: any(p.stat().st_size for p in folder.glob("*/.*.partial-*.mp4"))
                       and time.time() % 2 < 1.85, 30, interval=0.01, what="a segment half written")
            os.kill(run.proc.pid, signal.SIGKILL)
            run.finish()
        finally:
            run.kill()
    index = SegmentIndex(folder).entries()
    total = sum(e["bytes"] for e in index)
    assert total <= 150_000
    assert any(line.startswith("retention (0.15 MB): deleted") for line in run.err_lines), "old segments were deleted"
    on_disk = sorted(str(p.relative_to(folder)) for p in folder.glob("*/[!.]*.mp4"))
    assert set(e["file"] for e in index) <= set(on_disk)  # (a kill between finishing and listing: recover lists it)
    codes = []
    for entry in index:
        seg = [read_bottom_code(image) for image in read_video(folder / entry["file"]).images]
        assert seg == list(range(seg[0], seg[0] + len(seg))), entry  # in order, none missing
        if codes and not entry["gap_before_s"]:
            assert seg[0] == codes[-1][-1] + 1, "no frame lost or repeated across the boundary"
        codes.append(seg)
        with av.open(str(folder / entry["file"])) as container:
            assert next(container.demux(video=0)).is_keyframe
    partial = next(folder.glob("*/.*.partial-*.mp4"))
    left = [read_bottom_code(image) for image in read_video(partial).images]
    assert left and left == list(range(left[0], left[0] + len(left))) and left[0] == codes[-1][-1] + 1
    driver = chromium()
    try:  # a finished segment, and the one the kill cut short as it was left: both play to their end
        for path in (folder / index[-1]["file"], partial):
            played = play_to_the_end(driver, path, tmp_path / "page.html")
            assert played["ended"], (path.name, played)
    finally:
        driver.quit()
        (tmp_path / "page.html").unlink(missing_ok=True)
    result = streamer("recover", tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    after = SegmentIndex(folder).entries()
    assert sorted(e["file"] for e in after) == sorted(str(p.relative_to(folder)) for p in folder.glob("*/*.mp4"))
    recovered = after[-1]
    assert recovered["recovered"] and recovered["frames"] == len(left)
    assert (tmp_path / "cam1.jsonl").exists() and not list(tmp_path.glob(".cam1.partial-*"))
    assert not list(folder.glob("*/.*.partial-*"))
