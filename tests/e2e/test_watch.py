"""`streamer watch`: several real RTSP cameras (gst-rtsp-server on 127.0.0.1) sharing one real Triton.

Every check reads real outputs: each camera's recording (frame codes), its JSONL, the
per-camera accounting lines. No timing asserts: timeouts are generous.
"""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from ..cameras import CODE_BITS, RtspCamera, Run, camera_clip, read_bottom_code
from ..helpers import recorded_in_order as in_order, inference_count, read_jsonl, read_video, streamer, wait_until

pytestmark = pytest.mark.slow

WRAP = 1 << CODE_BITS  # index codes count modulo this (a 60 s clip wraps once)

LINE = re.compile(r"camera (\S+) \| live: captured (\d+), shown (\d+), inferred (\d+), "
                  r"skipped for inference (\d+), failed (\d+)(?:, dropped for display (\d+))?")


def per_camera(out: str) -> dict:
    found = {m.group(1): dict(zip(("captured", "shown", "inferred", "skipped", "failed", "dropped"),
                                  (int(g or 0) for g in m.groups()[1:])))
             for m in LINE.finditer(out)}
    for name, c in found.items():
        assert c["inferred"] + c["skipped"] + c["failed"] == c["captured"], (name, c)
    assert re.search(r"total \(\d+ cameras\) \| live: captured \d+", out), out
    return found


def codes(path: Path):
    return [read_bottom_code(img) for img in read_video(path).images]


def recorded_in_order(name: str, count: dict, recorded: list) -> None:
    in_order(name, count, recorded, WRAP)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return camera_clip(tmp_path_factory.mktemp("watch") / "cam25.mp4", 500)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    return camera_clip(tmp_path_factory.mktemp("watch") / "cam25-long.mp4", 1500)  # 60 s


@pytest.fixture(scope="module")
def slow_clip(tmp_path_factory) -> Path:
    # 12 fps: slower than the 25 fps camera, yet with a new frame each time its turn comes round when
    # the model runs at about 15 frames/s (a camera can only be refreshed as often as it has frames)
    return camera_clip(tmp_path_factory.mktemp("watch") / "cam12.mp4", 720, rate=12)  # 60 s


def camera_file(tmp_path: Path, cameras: dict, extra: str = "") -> Path:
    lines = [extra] if extra else []
    lines.append("cameras:")
    for name, spec in cameras.items():
        lines.append(f"  {name}:")
        lines += [f"    {k}: {v}" for k, v in spec.items()]
    path = tmp_path / "cameras.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_three_cameras_one_restarted_the_others_record_every_frame(tmp_path, long_clip, server_empty):
    cams = [RtspCamera(long_clip, path=f"/{n}") for n in ("a", "b", "c")]
    for cam in cams:
        cam.start()
    try:
        config = camera_file(tmp_path, {
            name: {"source": cam.url, "record": f"{name}.mp4", "detections": f"{name}.jsonl"}
            for name, cam in zip(("front", "garage", "yard"), cams)})
        run = Run("watch", config, "--triton", server_empty.grpc_url, "--status-every", 2)
        try:
            run.wait_for("front: [", timeout=120)  # a status line: the cameras are running
            served = inference_count(server_empty.http_url)
            wait_until(lambda: inference_count(server_empty.http_url) >= served + 6, 180, what="6 inferences")
            cams[1].stop()
            run.wait_for("dropped", timeout=60)
            cams[1].start()
            run.wait_for("is back (reconnect 1)", timeout=90)
            served = inference_count(server_empty.http_url)
            wait_until(lambda: inference_count(server_empty.http_url) >= served + 6, 180, what="6 more")
            run.proc.send_signal(signal.SIGINT)
            assert run.finish() == 130, run.stderr
        finally:
            run.kill()
    finally:
        for cam in cams:
            cam.stop()
    counts = per_camera(run.out)
    assert set(counts) == {"front", "garage", "yard"}
    for name in ("front", "yard"):  # untouched by the other camera's outage: every frame shown, in order
        shown, recorded = counts[name]["shown"], codes(tmp_path / f"{name}.mp4")
        assert shown > 50
        recorded_in_order(name, counts[name], recorded)
        assert counts[name]["inferred"] > 0
    garage = codes(tmp_path / "garage.mp4")
    restarts = [i for i in range(1, len(garage)) if garage[i] < garage[i - 1] and garage[i] != garage[i - 1] + 1 - WRAP]
    assert len(restarts) == 1 and len(garage) == counts["garage"]["shown"], garage  # reconnected, went on
    assert counts["garage"]["inferred"] > 0
    for name in ("front", "garage", "yard"):
        records = read_jsonl(tmp_path / f"{name}.jsonl")
        frames = [r["frame"] for r in records]
        assert frames == sorted(set(frames)) and len(records) == counts[name]["inferred"] + counts[name]["failed"]


STATUS = re.compile(r"^(cam\d): \[\d+ s\] display [\d.]+ fps, detections ([\d.]+)/s")


def test_cameras_at_different_rates_get_the_same_refresh(tmp_path, long_clip, slow_clip, server_paced):
    with RtspCamera(long_clip, path="/fast") as fast, RtspCamera(slow_clip, path="/slow") as slow:
        run = Run("watch", fast.url, slow.url, "--triton", server_paced.grpc_url, "--status-every", 3)

        def rates():
            """Detections/s per camera in each status interval since both cameras were inferred."""
            per = {"cam1": [], "cam2": []}
            for line in run.err_lines:
                m = STATUS.match(line)
                if m:
                    per[m.group(1)].append(float(m.group(2)))
            start = max((next((i for i, r in enumerate(v) if r > 0), len(v)) for v in per.values()), default=0)
            return {cam: v[start + 1:] for cam, v in per.items()}  # from the interval after that

        try:
            wait_until(lambda: min(len(v) for v in rates().values()) >= 4, 240, what="4 intervals of both cameras")
            run.proc.send_signal(signal.SIGINT)
            assert run.finish() == 130, run.stderr
        finally:
            run.kill()
    counts = per_camera(run.out)
    assert counts["cam1"]["captured"] > 1.6 * counts["cam2"]["captured"]  # 25 fps vs 12 fps
    intervals = {cam: v[:4] for cam, v in rates().items()}
    fast_rate, slow_rate = (sum(intervals[cam]) for cam in ("cam1", "cam2"))
    assert fast_rate > 0 and slow_rate > 0, intervals
    assert abs(fast_rate - slow_rate) <= 0.2 * max(fast_rate, slow_rate), intervals  # refresh within +-20 %


def test_a_camera_with_a_wrong_password_is_reported_and_the_others_run(tmp_path, clip, server_empty):
    with RtspCamera(clip, path="/ok") as good, RtspCamera(clip, path="/locked", user="u", password="right",
                                                        log=tmp_path / "locked.log") as locked:
        bad_url = locked.url.replace(":right@", ":WRONG@")
        config = camera_file(tmp_path, {"good": {"source": good.url, "record": "good.mp4"},
                                        "locked": {"source": bad_url, "record": "locked.mp4"}})
        result = streamer("watch", config, "--triton", server_empty.grpc_url, "--max-frames", 60, timeout=180)
        attempts = locked.connections
    assert result.returncode == 3, result.stderr  # documented: a camera could not be opened
    assert "error: camera locked:" in result.stderr and "refused access" in result.stderr
    assert attempts == 1  # given up at once: retrying cannot fix a password (no retry storm)
    assert "given up: wrong user or password (401)" in result.stdout  # its accounting line says so too
    assert "WRONG" not in result.stderr + result.stdout and "right" not in result.stdout
    counts = per_camera(result.stdout)
    assert counts["good"]["captured"] == counts["good"]["shown"] == 60
    recorded = codes(tmp_path / "good.mp4")
    assert recorded == list(range(recorded[0], recorded[0] + 60))  # every captured frame, in order
    assert not (tmp_path / "locked.mp4").exists()


def test_all_cameras_failing_is_an_input_error(tmp_path):
    """Errors retrying cannot fix on every camera: said at once, before any server starts."""
    junk = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for path in junk:
        path.write_bytes(b"not a video at all" * 100)
    result = streamer("watch", *junk, timeout=60)
    assert result.returncode == 3
    assert "none of the 2 cameras could be opened" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("error: camera cam") == 2 and "starting the embedded Triton" not in result.stderr


def test_cameras_that_never_come_up_are_given_up_and_the_run_ends_with_an_input_error(tmp_path, server_empty):
    from streamer.server import free_port

    urls = [f"rtsp://127.0.0.1:{free_port()}/{name}" for name in ("a", "b")]  # nothing listens there
    port = free_port()
    run = Run("watch", *urls, "--triton", server_empty.grpc_url, "--max-reconnect-time", 8,
              "--summary", tmp_path / "s.json", "--metrics-port", port)
    try:
        def camera_up() -> dict:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                    text = resp.read().decode()
            except OSError:
                return {}
            return {m.group(1): float(m.group(2)) for m in re.finditer(r'streamer_camera_up\{camera="(\w+)"\} (\S+)', text)}

        # while they are retried, both have their series, at 0
        wait_until(lambda: camera_up() == {"cam1": 0.0, "cam2": 0.0}, 60, what="both cameras' series at 0")
        assert run.finish(timeout=120) == 3, run.stderr
    finally:
        run.kill()
    assert run.stderr.count("is not reachable yet") == 2
    assert run.stderr.count("did not come up within 8 s (--max-reconnect-time)") == 2
    streams = json.loads((tmp_path / "s.json").read_text())["streams"]
    assert [(s["camera"], s["frames"]["captured"]) for s in streams] == [("failed", 0), ("failed", 0)]
    assert all("did not come up within 8 s" in s["error"] for s in streams)


def test_a_late_camera_has_its_tile_from_the_start_and_its_pictures_when_it_comes(tmp_path, long_clip,
                                                                                  server_empty):
    """Four cameras, one of them not up yet (booting after a power cut): four named tiles at once,
    the late one OFFLINE with the reason; when its server starts it connects, its tile plays and
    its recording starts with its first frame; the others are unaffected."""
    from streamer.mosaic import picture_rect, tile_rect, tile_size_to_fit

    from ..cameras import VirtualDisplay
    from .test_live_window import red_banner

    names = ("front", "garage", "yard", "late")
    cams = [RtspCamera(long_clip, path=f"/{n}", log=tmp_path / f"{n}.log") for n in names]  # 60 s: no end
    with VirtualDisplay(1400, 800) as display:
        for cam in cams[:3]:
            cam.start()
        try:
            config = camera_file(tmp_path, {name: {"source": cam.url, "record": f"{name}.mp4"}
                                            for name, cam in zip(names, cams)})
            run = Run("watch", config, "--show", "--triton", server_empty.grpc_url, "--status-every", 1,
                      env=display.env)
            try:
                window = display.find_window("streamer: 4 cameras")
                size = tile_size_to_fit(4, (1280, 720))

                def tiles():
                    image = display.window_image(window)
                    return [image[y:y + h, x:x + w] for x, y, w, h in (tile_rect(i, 4, size) for i in range(4))]

                def picture(i):
                    x, y, w, h = picture_rect(i, 4, (320, 240), size)
                    return display.window_image(window)[y:y + h, x:x + w]

                run.wait_for("late: [", timeout=60)  # a status line of the late camera ...
                run.wait_for("(OFFLINE: connection refused, retrying", timeout=30)  # ... saying why it is down
                display.wait_shown(window, lambda: red_banner(tiles()[3]), 30, what="the late camera's OFFLINE tile")
                titles = [t[:12] for t in tiles()]
                assert all(not (titles[i] == titles[j]).all() for i in range(4) for j in range(i)), \
                    "four tiles, each with its own name"
                wait_until(lambda: all(read_bottom_code(picture(i)) is not None for i in range(3)), 60,
                           interval=0.25, what="the three cameras that are up playing in their tiles")
                cams[3].start()
                run.wait_for("is up (it was not reachable for", timeout=60)
                wait_until(lambda: not red_banner(tiles()[3]) and read_bottom_code(picture(3)) is not None, 60,
                           interval=0.25, what="the late camera's pictures in its tile")
                served = inference_count(server_empty.http_url)
                wait_until(lambda: inference_count(server_empty.http_url) >= served + 4, 120,
                           what="4 more inferences")
                display.press(window, "q")
                assert run.finish() == 0, run.stderr
            finally:
                run.kill()
        finally:
            for cam in cams:
                cam.stop()
    assert run.stderr.count("is not reachable yet") == 1 and "dropped" not in run.stderr
    counts = per_camera(run.out)
    assert set(counts) == set(names)
    for name in names:
        shown, recorded = counts[name]["shown"], codes(tmp_path / f"{name}.mp4")
        assert shown > 0, name
        recorded_in_order(name, counts[name], recorded)
    late = codes(tmp_path / "late.mp4")
    assert late[0] <= 3, late[:5]  # its recording starts with its first frames
    assert cams[3].connections == 1  # one connection once it was up; the tries before were refused


def test_files_as_cameras_play_at_their_pace_and_end(tmp_path, server_empty):
    a = camera_clip(tmp_path / "a.mp4", 30, rate=15)
    b = camera_clip(tmp_path / "b.mp4", 45, rate=15)
    started = time.monotonic()
    result = streamer("watch", a, b, "--out-dir", tmp_path, "--segment", "0", "--triton", server_empty.grpc_url,
                      timeout=180)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    counts = per_camera(result.stdout)
    assert counts["cam1"]["captured"] == 30 and counts["cam2"]["captured"] == 45
    assert codes(tmp_path / "cam1.mp4") == list(range(30))
    assert codes(tmp_path / "cam2.mp4") == list(range(45))
    assert "end of file" in result.stderr
    assert elapsed > 3  # 45 frames at 15 fps take 3 s: played at their own pace, not as fast as possible


def test_the_mosaic_shows_every_camera_and_the_offline_banner_on_its_tile(tmp_path, clip, server_empty):
    from streamer.mosaic import picture_rect, tile_rect, tile_size_to_fit

    from ..cameras import VirtualDisplay
    from .test_live_window import red_banner

    with VirtualDisplay(1400, 800) as display, RtspCamera(clip, path="/a") as a, RtspCamera(clip, path="/b") as b:
        config = camera_file(tmp_path, {"front": {"source": a.url}, "yard": {"source": b.url}})
        run = Run("watch", config, "--show", "--triton", server_empty.grpc_url, env=display.env)
        try:
            window = display.find_window("streamer: 2 cameras")
            tile_size = tile_size_to_fit(2, (1280, 720))

            def tiles():
                image = display.window_image(window)
                return [image[y:y + h, x:x + w] for x, y, w, h in (tile_rect(i, 2, tile_size) for i in range(2))], \
                    [image[y:y + h, x:x + w] for x, y, w, h in (picture_rect(i, 2, (320, 240), tile_size)
                                                                for i in range(2))]

            seen = {0: set(), 1: set()}

            def both_play() -> bool:  # both cameras play in their tiles: 3 pictures seen in each
                for i, picture in enumerate(tiles()[1]):
                    code = read_bottom_code(picture)
                    if code is not None:
                        seen[i].add(code)
                return len(seen[0]) >= 3 and len(seen[1]) >= 3

            display.wait_shown(window, both_play, 60, what="3 pictures in each camera's tile")
            titles = [t[:12] for t in tiles()[0]]
            assert not (titles[0] == titles[1]).all(), "the two tiles should carry different names"
            assert not any(red_banner(t) for t in tiles()[0])
            b.stop()
            run.wait_for("dropped", timeout=60)
            display.wait_shown(window, lambda: red_banner(tiles()[0][1]), 30, what="the OFFLINE banner on yard's tile")
            left, right = tiles()[0]
            assert red_banner(right) and not red_banner(left), "the OFFLINE banner belongs on yard's tile only"
            display.press(window, "q")
            assert run.finish() == 0, run.stderr
        finally:
            run.kill()
    assert "window closed by the user" in run.stderr
    per_camera(run.out)


def test_prometheus_scrapes_each_camera_and_the_embedded_triton(tmp_path, clip, repo_empty):
    from streamer.server import free_port

    from ..prometheus import Prometheus

    metrics_port, triton_metrics = free_port(), free_port()
    with RtspCamera(clip, path="/a") as a, RtspCamera(clip, path="/b") as b:
        config = camera_file(tmp_path, {"front": {"source": a.url}, "yard": {"source": b.url}},
                             extra=f"metrics_port: {metrics_port}")
        run = Run("watch", config, "--model-repo", repo_empty, "--threads", 2,
                  "--triton-metrics-port", triton_metrics)
        try:
            run.wait_for(f"streamer metrics: http://127.0.0.1:{metrics_port}/metrics", timeout=180)
            run.wait_for(f"Triton metrics: http://127.0.0.1:{triton_metrics}/metrics", timeout=10)
            targets = {"streamer": [f"127.0.0.1:{metrics_port}"], "triton": [f"127.0.0.1:{triton_metrics}"]}
            with Prometheus(targets, tmp_path) as prom:
                query = "streamer_frames_captured_total"
                prom.wait_for(query, lambda series: len(series) == 2, timeout=60)
                first = {s[0]["camera"]: s[1] for s in prom.query(query)}
                prom.wait_for(query, lambda series: all(v > first[labels["camera"]] for labels, v in series), 60)
                assert set(first) == {"front", "yard"}
                for name in ("streamer_frames_inferred_total", "streamer_camera_up", "streamer_inference_up",
                             "streamer_frame_age_seconds", "streamer_inference_latency_seconds_count"):
                    prom.wait_for(name, lambda series: {s[0]["camera"] for s in series} == {"front", "yard"}, 60)
                up = {s[0]["camera"]: s[1] for s in prom.query("streamer_camera_up")}
                assert up == {"front": 1.0, "yard": 1.0}
                prom.wait_for("sum(nv_inference_count)", lambda series: series and series[0][1] > 0, 60)
                b.stop()
                prom.wait_for('streamer_camera_up{camera="yard"}', lambda series: series and series[0][1] == 0, 60)
            run.proc.send_signal(signal.SIGTERM)
            assert run.finish() == 130, run.stderr
        finally:
            run.kill()
    counts = per_camera(run.out)
    assert counts["front"]["captured"] > 0
