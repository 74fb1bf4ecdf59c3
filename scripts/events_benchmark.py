"""What the event stage costs per frame (issue 24: at most 0.5 ms with 20 tracks and 10 zones and
lines, on one core), without a server, a model or a picture to decode.

20 tracked objects wander on smooth random paths over a 1280x720 picture (some cross the lines,
enter and leave the zones); 5 lines and 5 zones (quadrilaterals and hexagons) cover it. Every
frame goes through `EventStage.push` as a file run drives it (every 5th frame an answer: the
model's boxes; the others boxes a tracker made), with events sent to a sink that keeps nothing.
The figure is per frame, over the whole clip: the mean of each frame's best of N repeats (what an
unloaded core takes) and the median of all (what this machine gave, load included). Pinned to
one core with `taskset -c 0` when it is available.

    PYTHONPATH=$PWD .venv/bin/python scripts/events_benchmark.py
    PYTHONPATH=$PWD .venv/bin/python scripts/events_benchmark.py --tracks 20 --regions 10 --frames 500
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.events.config import regions  # noqa: E402
from streamer.events.stage import EventStage  # noqa: E402
from streamer.frames import Detections, Frame  # noqa: E402
from streamer.tracking.columns import Made, tracked_detections  # noqa: E402

WIDTH, HEIGHT = 1280, 720


class Discard:
    def __init__(self):
        self.events = 0

    def publish(self, event) -> None:
        self.events += 1

    def counts(self, counts) -> None:
        pass


def shapes(count: int):
    """count // 2 lines and the rest zones, spread over the picture."""
    rng = np.random.default_rng(7)
    lines, zones = {}, {}
    for k in range(count // 2):
        x = 120 + k * (WIDTH - 240) / max(1, count // 2 - 1)
        lines[f"line{k}"] = {"points": [[float(x), 40.0], [float(x + 80 * (k % 2)), float(HEIGHT - 40)]]}
    for k in range(count - count // 2):
        cx, cy, r = rng.uniform(200, WIDTH - 200), rng.uniform(150, HEIGHT - 150), rng.uniform(80, 140)
        sides = 4 if k % 2 else 6
        zones[f"zone{k}"] = {"points": [[cx + r * math.cos(2 * math.pi * i / sides),
                                         cy + r * math.sin(2 * math.pi * i / sides)] for i in range(sides)]}
    return regions(zones, lines, "bench")


def paths(tracks: int, frames: int) -> np.ndarray:
    """frames x tracks x 4 boxes on smooth random paths (3-12 px a frame)."""
    rng = np.random.default_rng(3)
    start = rng.uniform([100, 100], [WIDTH - 100, HEIGHT - 100], (tracks, 2))
    speed = rng.uniform(3, 12, tracks)
    angle = rng.uniform(0, 2 * np.pi, tracks)
    turn = rng.uniform(-0.03, 0.03, tracks)
    size = rng.uniform(40, 120, (tracks, 2))
    boxes = np.zeros((frames, tracks, 4))
    pos = start.copy()
    for i in range(frames):
        angle += turn
        pos += np.stack([np.cos(angle), np.sin(angle)], 1) * speed[:, None]
        for axis, top in ((0, WIDTH), (1, HEIGHT)):  # bounce off the edges
            low, high = pos[:, axis] < 60, pos[:, axis] > top - 60
            angle[low | high] += np.pi
            pos[:, axis] = np.clip(pos[:, axis], 60, top - 60)
        boxes[i, :, :2] = pos - size / 2
        boxes[i, :, 2:] = pos + size / 2
    return boxes


def detections(boxes: np.ndarray, answer: bool) -> Detections:
    n = len(boxes)
    if answer:
        return Detections(boxes.astype(np.float32), np.ones(n, np.int64), np.full(n, 0.9, np.float32),
                          track_ids=np.arange(1, n + 1))
    return tracked_detections([Made(i + 1, b, 1, 0.9, "flow", 0.1) for i, b in enumerate(boxes)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=20)
    parser.add_argument("--regions", type=int, default=10, help="zones and lines together (half each)")
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--every", type=int, default=5, help="an answer every Nth frame")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    found = shapes(args.regions)
    boxes = paths(args.tracks, args.frames)
    inputs = [(Frame(i, i, Fraction(1, 25), i / 25, image), detections(boxes[i], i % args.every == 0))
              for i in range(args.frames)]
    times = np.zeros((args.repeat, args.frames))
    made = 0
    for r in range(args.repeat):
        sink = Discard()
        stage = EventStage("bench", found, {1: "person"}.get, sink=sink)
        for i, (frame, dets) in enumerate(inputs):
            started = time.perf_counter()
            for _ in stage.push(frame, dets):
                pass
            times[r, i] = time.perf_counter() - started
        list(stage.flush())
        made = sink.events
    best = 1000 * times.min(axis=0).mean()
    print(f"event stage, {args.tracks} tracks, {len(found.lines)} lines + {len(found.zones)} zones, "
          f"{args.frames} frames of {WIDTH}x{HEIGHT} (an answer every {args.every}): "
          f"{best:.3f} ms a frame best-of-{args.repeat} mean, {1000 * np.median(times):.3f} ms median, "
          f"p95 {1000 * np.percentile(times, 95):.3f} ms; {made} events a run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
