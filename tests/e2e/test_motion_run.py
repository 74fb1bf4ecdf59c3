"""Inference that follows motion, through the real command: the sprite detector (tests/sprites.py,
meaningful boxes without weights) on the embedded Triton, camera-like footage written with PyAV
(tests/motion_clips.py: sensor noise, H.264 flicker, the index code masked from motion).

A file with long still stretches, `run --infer-on motion`: every frame written in order with its
timestamps, the model sees the frames where something moves (its boxes there exactly an `always`
run's), the first and the last; a parked car keeps its box and id; the report counts it all.

Three real RTSP cameras in `watch` (motion by default), one inference at a time from a model
slower than the cameras: two still cameras and a busy one, the busy one gets most of the answers;
a car that parks keeps its box and id through the still stretch and is gone once it leaves; the
motion flag and the skipped frames by reason reach /api/state and Prometheus. No timing asserts.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import urllib.request
from typing import Dict, List

import pytest

from streamer.server import free_port, start_on_free_ports

from .. import motion_clips as M
from .. import sprites as S
from ..cameras import RtspCamera, Run
from ..helpers import read_jsonl, read_video, streamer

pytestmark = pytest.mark.slow

SLOW_DELAY_US = 200_000  # fasterrcnn_u8: about 0.2 s an answer (Triton's batcher holds each lone request)
FRAMES = 300  # 12 s at 25 fps
PARK_X = 150


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The sprite detector: `fasterrcnn` fast, `fasterrcnn_u8` slow without using CPU."""
    repo = S.export_sprites(tmp_path_factory.mktemp("repo_motion"), max_queue_delay_us=SLOW_DELAY_US)
    started = start_on_free_ports(repo, threads=1, startup_timeout=300)
    yield started
    started.stop()
    started.cleanup()


def same(a: List[dict], b: List[dict]) -> bool:
    key = lambda d: (d["label"], d["box"])  # noqa: E731
    return sorted(map(key, a)) == sorted(map(key, b))


# -- a file ---------------------------------------------------------------------------------------

def drive_in_and_park(start: int, speed: float, x: float, y: float) -> M.Thing:
    def path(i: int):
        if i < start:
            return None
        return M.box(min(x, -30 + speed * (i - start)), y, 60, 40)
    return M.Thing(M.GREEN, path, "car")


def test_a_file_infers_where_things_move_and_tracks_the_rest(tmp_path, server):
    footage = M.Footage("file", 150, code=True, things=[
        M.Thing(M.RED, M.crossing(20, 45, 8.0, 110, (26, 44), 320), "person"),  # walks across, frames 21-62
        drive_in_and_park(90, 10.0, 200, 170)])  # drives in from frame 90, parked from 113 to the end
    clip = M.write(tmp_path / "clip.mp4", footage)
    common = ["--triton", server.grpc_url, "--model", "fasterrcnn"]
    always = streamer("run", clip, *common, "--detections", tmp_path / "always.jsonl", timeout=300)
    assert always.returncode == 0, always.stderr
    out, log, summary = tmp_path / "out.mp4", tmp_path / "motion.jsonl", tmp_path / "motion.json"
    run = streamer("run", clip, *common, "--infer-on", "motion", "--stationary-interval", "2",
                   "--motion-mask", M.code_mask(320, 240), "--out", out, "--detections", log, "--summary", summary,
                   timeout=300)
    assert run.returncode == 0, run.stderr

    reference, records = read_jsonl(tmp_path / "always.jsonl"), read_jsonl(log)
    assert {r["status"] for r in reference} == {"ok"}  # files infer every frame by default
    # every frame written, in order, with the input's timestamps
    assert [r["frame"] for r in records] == list(range(footage.frames))
    written, source = read_video(out), read_video(clip)
    assert written.codes == list(range(footage.frames)) and written.pts == source.pts
    # the model saw the first and the last frame and every frame where something visibly moved;
    # there its boxes are exactly an `always` run's
    ok = [r["frame"] for r in records if r["status"] == "ok"]
    assert ok[0] == 0 and ok[-1] == footage.frames - 1
    assert set(M.moving_frames(footage)) <= set(ok), sorted(set(M.moving_frames(footage)) - set(ok))
    assert all(same(records[i]["detections"], reference[i]["detections"]) for i in ok)
    # ... and little else: the still stretch before anything happens was not inferred
    assert not set(ok) & set(range(1, 20)) and len(ok) <= 0.75 * footage.frames
    # the parked car: boxed on every frame once it is in view, one id from the frame it parked
    parked = [i for i in range(113, footage.frames)]
    ids = set()
    for i in parked:
        [car] = [d for d in records[i]["detections"] if d["label"] == 3]
        assert S.iou(car["box"], footage.truth(i)["car"][1]) > 0.9, (i, car)
        ids.add(car["track_id"])
    assert len(ids) == 1
    # counted: in the summary and the accounting line, the frames not inferred by why
    report = json.loads(summary.read_text())["streams"][0]
    frames = report["frames"]
    assert frames["inferred"] == len(ok) and frames["tracked"] == footage.frames - len(ok)
    assert report["skipped_by_reason"] == {"every": 0, "still": frames["tracked"]}
    assert report["motion"]["frames"] >= len(M.moving_frames(footage)) - 5
    assert f"tracked {frames['tracked']} (still {frames['tracked']})" in run.stdout


# -- three cameras --------------------------------------------------------------------------------

def circling(colour, cx: float, cy: float, radius: float, speed: float, key: str) -> M.Thing:
    return M.Thing(colour, lambda i: M.box(cx + radius * math.cos(speed * i), cy + radius * math.sin(speed * i),
                                           40, 50), key)


def parks_then_leaves(i: int):
    """Drives in from the left (frames 0-25), parks at PARK_X, leaves to the right from 230 on."""
    if i < 230:
        return M.box(min(PARK_X, -30 + 7 * i), 150, 60, 40)
    x = PARK_X + 8 * (i - 230)
    return M.box(x, 150, 60, 40) if x < 360 else None


class Poller(threading.Thread):
    """Reads /api/state and /metrics while the run lasts: per camera, frame -> detections drawn,
    the motion flags seen; the Prometheus samples of the motion gauge and the skipped reasons."""

    def __init__(self, web: int, metrics: int):
        super().__init__(daemon=True)
        self.web, self.metrics = web, metrics
        self.seen: Dict[str, Dict[int, List[dict]]] = {}
        self.flags: Dict[str, set] = {}
        self.scraped: List[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        last_scrape = 0.0
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.web}/api/state", timeout=2) as resp:
                    state = json.loads(resp.read())
                for cam in state["cameras"]:
                    if cam.get("up") and cam.get("frame") is not None:
                        self.seen.setdefault(cam["name"], {}).setdefault(int(cam["frame"]), cam["detections"])
                        self.flags.setdefault(cam["name"], set()).add(cam.get("motion"))
                if time.monotonic() - last_scrape > 0.5:
                    last_scrape = time.monotonic()
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=2) as resp:
                        self.scraped.append(resp.read().decode())
            except (OSError, ValueError):
                pass
            time.sleep(0.03)


def test_watch_gives_the_answers_to_the_camera_where_things_move(tmp_path, server):
    size = (320, 240)
    scenes = {
        "empty": M.Footage("empty", FRAMES, code=True, seed=1),
        "parked": M.Footage("parked", FRAMES, code=True, seed=2, things=[M.Thing(M.GREEN, parks_then_leaves, "car")]),
        "busy": M.Footage("busy", FRAMES, code=True, seed=3, things=[
            circling(M.RED, 100, 140, 50, 0.08, "a"), circling(M.BLUE, 230, 130, 40, -0.1, "b")]),
    }
    clips = {name: M.write(tmp_path / f"{name}.mp4", scene) for name, scene in scenes.items()}
    cameras = {name: RtspCamera(clip) for name, clip in clips.items()}
    web, metrics = free_port(), free_port()
    try:
        for camera in cameras.values():
            camera.start()
        config = tmp_path / "cameras.yaml"
        config.write_text(
            f"defaults:\n  stationary_interval: 3\n  motion:\n    mask: '{M.code_mask(*size)}'\ncameras:\n"
            + "".join(f"  {name}:\n    source: {camera.url}\n" for name, camera in cameras.items()))
        summary = tmp_path / "summary.json"
        env = {k: v for k, v in os.environ.items() if k != "STREAMER_WEB_TOKEN"}
        run = Run("watch", config, "--triton", server.grpc_url, "--max-frames", FRAMES, "--status-every", 0,
                  "--web", f"127.0.0.1:{web}", "--metrics-port", metrics, "--summary", summary, env=env)
        poller = Poller(web, metrics)
        poller.start()
        try:
            assert run.finish(timeout=240) == 0, run.stderr
        finally:
            poller.stop.set()
            run.kill()
        poller.join(10)
    finally:
        for camera in cameras.values():
            camera.stop()

    streams = {s["name"]: s for s in json.loads(summary.read_text())["streams"]}
    inferred = {name: s["frames"]["inferred"] for name, s in streams.items()}
    print(f"\nanswers per camera over {FRAMES} frames: {inferred}")
    for name, stream in streams.items():
        frames, reasons = stream["frames"], stream["skipped_by_reason"]
        assert frames["captured"] == FRAMES, (name, frames)
        assert frames["inferred"] + frames["failed"] + frames["skipped"] == frames["captured"], (name, frames)
        assert sum(reasons.values()) == frames["skipped"], (name, reasons)
    # the still cameras asked for little: their first frame, a re-check every 3 s, the car's comings and goings
    assert streams["empty"]["skipped_by_reason"]["still"] > 0.9 * FRAMES
    assert inferred["empty"] <= 1 + FRAMES / 25 / 3 + 2
    assert inferred["busy"] > 2 * max(inferred["empty"], inferred["parked"]), inferred

    # the parked car: its box and id on every sampled frame of the still stretch, gone once it left
    car_truth = scenes["parked"].truth
    seen = poller.seen["parked"]
    stretch = [f for f in sorted(seen) if 75 <= f < 228]
    assert len(stretch) >= 30, f"only {len(stretch)} frames sampled"
    ids = set()
    for f in stretch:
        cars = [d for d in seen[f] if d["label"] == 3]
        assert len(cars) == 1, (f, seen[f])
        assert S.iou(cars[0]["box"], car_truth(f)["car"][1]) > 0.8, (f, cars[0]["box"])
        ids.add(cars[0].get("track_id"))
    assert len(ids) == 1 and None not in ids, ids
    gone = [f for f in sorted(seen) if f >= 280]  # out of the picture from frame 256
    assert gone and not any(d["label"] == 3 for f in gone for d in seen[f]), [seen[f] for f in gone]

    # the motion flag on /api/state and in Prometheus; the still frames counted by reason
    assert True in poller.flags["busy"] and poller.flags["empty"] == {False}
    text = "\n".join(poller.scraped)
    assert 'streamer_motion{camera="busy"} 1.0' in text and 'streamer_motion{camera="empty"} 1.0' not in text
    assert 'streamer_frames_skipped_by_reason_total{camera="empty",reason="still"}' in text
