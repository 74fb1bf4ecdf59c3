"""Zones, counting lines and events through the real pipeline: `streamer run` and `watch` with the
sprite detector (tests/sprites.py) on the embedded Triton, on clips whose paths are known.

Files (`--zones`, `--events`, `--summary`), with every frame inferred and with `--infer-every 5`:
two persons crossing each other on a line, a car turning back on one, a dog hidden behind a bar
while it crosses, a plain untextured bicycle moving a box-width between inferences: the counts
are the paths' own, in the report, the accounting line and the events file, one id and one
new/end pair per object. Live: a real RTSP camera in `watch`, the counts on `/api/state` and the
metrics endpoint. Bad zone files: one line each, exit 2 (3 for what only the picture shows).
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from streamer.server import free_port

from .. import sprites as S
from ..cameras import RtspCamera, Run
from ..helpers import read_jsonl, read_video, streamer, wait_until

pytestmark = pytest.mark.slow

EXPECTED_LINE = "counts door in 1 out 1, gate in 2 out 1, fence in 1 out 0, lane in 0 out 1, yard entered 1"


@pytest.fixture(scope="module")
def counting(tmp_path_factory):
    root = tmp_path_factory.mktemp("counting")
    scene = S.counting()
    clip = root / "counting.mp4"
    truth = S.write_scene(clip, scene)
    zones = root / "zones.yaml"
    zones.write_text(S.COUNTING_ZONES)
    return root, scene, clip, truth, zones


def counted(root: Path, clip: Path, zones: Path, server, *flags: str) -> dict:
    tag = "_".join(str(f).strip("-").replace("/", "_") for f in flags if not isinstance(f, Path)) or "every"
    events, summary, dets = root / f"{tag}.events.jsonl", root / f"{tag}.json", root / f"{tag}.dets.jsonl"
    result = streamer("run", clip, "--triton", server.grpc_url, "--zones", zones, "--events", events,
                      "--summary", summary, "--detections", dets, *flags, timeout=300)
    assert result.returncode == 0, result.stderr
    return {"stdout": result.stdout, "stderr": result.stderr, "events": read_jsonl(events),
            "summary": json.loads(summary.read_text()), "records": read_jsonl(dets)}


@pytest.mark.parametrize("flags", [(), ("--infer-every", "5")], ids=["every-frame", "infer-every-5"])
def test_a_file_counts_what_crosses_as_its_paths_say(counting, server_sprites, flags):
    root, scene, clip, truth, zones = counting
    out = root / f"out{len(flags)}.mp4"
    draw = ("--out", out, "--draw-zones") if flags else ("--out", out)
    run = counted(root, clip, zones, server_sprites, *flags, *draw)
    stream = run["summary"]["streams"][0]
    assert stream["lines"] == S.COUNTING_EXPECTED["lines"]
    assert {name: z["entered"] for name, z in stream["zones"].items()} == S.COUNTING_EXPECTED["entered"]
    assert stream["zones"]["yard"]["max_inside"] == {"bicycle": 1} and stream["zones"]["yard"]["inside"] == {}
    assert EXPECTED_LINE in run["stdout"]
    assert run["summary"]["event_outputs"][0]["sent"] == len(run["events"])
    assert run["summary"]["event_outputs"][0]["state"] == "closed"
    # One object per sprite: one new and one end each, and one id on every box of it.
    events = run["events"]
    news = [e["after"] for e in events if e["type"] == "new"]
    assert sorted(n["label"] for n in news) == ["bicycle", "car", "dog", "person", "person"]
    assert sorted(e["after"]["id"] for e in events if e["type"] == "end") == sorted(n["id"] for n in news)
    for sprite in scene.sprites:
        ids = {S.match(truth.boxes[i], run["records"][i]["detections"]).get(sprite.key, (0, None))[1]
               for i in range(scene.frames) if sprite.key in truth.boxes[i]}
        assert ids - {None} and len(ids - {None}) == 1, f"{sprite.key}: ids {ids}"
    # The crossings in the events file are the counts.
    crossings = sorted((c["line"], c["direction"], c["label"]) for e in events for c in e["crossings"])
    assert crossings == sorted((line, d, label) for line, dirs in S.COUNTING_EXPECTED["lines"].items()
                               for d, per in dirs.items() for label, n in per.items() for _ in range(n))
    entered = [e for e in events if "entered_zone" in e["reasons"]]
    assert [(e["after"]["label"], e["after"]["current_zones"]) for e in entered] == [("bicycle", ["yard"])]
    # The door line as drawn (x = 320, y 40..260): only with --draw-zones in --out.
    frame = read_video(out).images[0]
    column = frame[80:240, 318:323].reshape(-1, 3).astype(int)
    cyan = (column[:, 2] > 150) & (column[:, 1] > 150) & (column[:, 0] < 100)
    assert cyan.mean() > 0.5 if flags else cyan.mean() < 0.05
    if flags:  # the plain bicycle between inferences: interpolated along its path, not left behind
        tracked = [r["frame"] for r in run["records"] if r["status"] == "tracked"]
        values = [S.match(truth.boxes[i], run["records"][i]["detections"])["bicycle"][0]
                  for i in tracked if "bicycle" in truth.boxes[i]]
        assert np.mean(values) >= 0.85, np.mean(values)


BAD_ZONES = [
    ("zones: {a: {points: [[0, 0], [10, 0]]}}", 2, "zones.a.points: a zone needs at least 3 points (got 2)"),
    ("zones: {a: {points: [[0, 0], [100, 100], [100, 0], [0, 100]]}}", 2, "zones.a.points: the polygon crosses itself"),
    ("lines: {l: {points: [[5, 5], [5, 5]]}}", 2, "lines.l.points: the line's two points are the same"),
    ("lines: {l: {points: [[5, 5], [half, 6]]}}", 2, "lines.l.points[1]: a coordinate is a number of pixels"),
    ("lines: {l: {points: [[0, 0], [9, 9]], colour: red}}", 2, "lines.l.colour: unknown key"),
    ("zones: {a: {points: [[0, 0], [9, 0], [0, 9]], min_frames: 0}}", 2, "zones.a.min_frames: input should be"),
    ("lines: {l: {points: [[0, 0], [9, 9]], classes: [unicorn]}}", 2, "lines.l.classes: unknown class name(s)"),
    ("zones: {a: {points: [[0, 0], [700, 0], [0, 400]]}}", 3, "zones.a.points: point 1 [700, 0] is outside the "
                                                             "640x480 picture"),
]


@pytest.mark.parametrize("text, code, message", BAD_ZONES, ids=[m.split(":")[0] for _, _, m in BAD_ZONES])
def test_a_bad_zones_file_is_one_line_naming_the_field(counting, server_sprites, tmp_path, text, code,
                                                      message):
    _, _, clip, _, _ = counting
    zones = tmp_path / "zones.yaml"
    zones.write_text(text + "\n")
    result = streamer("run", clip, "--triton", server_sprites.grpc_url, "--zones", zones, "--max-frames", "2",
                      timeout=120)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == code, result.stderr
    assert len(errors) == 1 and message in errors[0] and str(zones) in errors[0], result.stderr
    assert "Traceback" not in result.stderr


# -- live ------------------------------------------------------------------------------------------

LIVE_FRAMES = 260


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=3) as resp:
        return resp.read()


def test_watch_counts_a_live_camera_on_the_page_state_and_the_metrics(tmp_path, server_sprites):
    """A person going round a circle (once every 5 s) across a line: in and out counted live."""
    clip = tmp_path / "camera.mp4"
    S.write_scene(clip, S.camera(LIVE_FRAMES + 10))
    web, metrics = free_port(), free_port()
    events, summary = tmp_path / "events.jsonl", tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if k != "STREAMER_WEB_TOKEN"}
    with RtspCamera(clip) as cam:
        cameras = tmp_path / "cameras.yaml"
        cameras.write_text(f"cameras:\n  front:\n    source: {cam.url}\n"
                           "    lines: {mid: {points: [[130, 0], [130, '100%']], classes: [person]}}\n"
                           "    zones: {left: {points: [[0, 0], ['34%', 0], ['34%', 288], [0, 288]]}}\n")
        run = Run("watch", cameras, "--triton", server_sprites.grpc_url, "--max-frames", LIVE_FRAMES,
                  "--web", f"127.0.0.1:{web}", "--metrics-port", metrics, "--events", events, "--summary", summary,
                  env=env)
        try:
            def both_ways() -> bool:
                try:
                    state = json.loads(fetch(f"http://127.0.0.1:{web}/api/state"))
                except (OSError, ValueError):
                    return False
                counts = state["cameras"][0]["counts"] if state["cameras"] else None
                return bool(counts and counts["lines"]["mid"]["in"] and counts["lines"]["mid"]["out"])

            wait_until(both_ways, 120, interval=0.3, what="an in and an out crossing on /api/state")
            state = json.loads(fetch(f"http://127.0.0.1:{web}/api/state"))
            cam_state = state["cameras"][0]
            assert cam_state["events"] and {e["type"] for e in cam_state["events"]} >= {"new", "update"}
            assert state["event_outputs"][0]["name"] == str(events)
            assert state["event_outputs"][0]["state"] == "connected"
            text = fetch(f"http://127.0.0.1:{metrics}/metrics").decode()
            for direction in ("in", "out"):
                series = (f'streamer_line_crossings_total{{camera="front",direction="{direction}",'
                          f'label="person",line="mid"}}')
                assert series in text, text
            assert 'streamer_zone_objects{camera="front",label="person",zone="left"}' in text
            assert 'streamer_event_output_up{output="' in text
            assert run.finish() == 0, run.stderr
        finally:
            run.kill()
    report = json.loads(summary.read_text())
    lines = report["streams"][0]["lines"]["mid"]
    assert lines["in"]["person"] >= 1 and lines["out"]["person"] >= 1
    assert abs(lines["in"]["person"] - lines["out"]["person"]) <= 1  # round and round: in and out alternate
    written = read_jsonl(events)
    assert report["event_outputs"][0]["sent"] == len(written) > 0
    assert all(e["after"]["wall_time"] is not None for e in written)
    assert [e["type"] for e in written if e["after"]["label"] == "person"][-1] == "end"
