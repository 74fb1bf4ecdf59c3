"""What tracking costs and how close its boxes are (issue 16), without a server or a model.

Cost: tracker + propagation per displayed 640x480 frame with 10 objects, on one OpenCV thread
(goal <= 5 ms): the live stage (every frame pushed, an answer every 15th frame arriving 15 frames
late), the file stage (--infer-every 5) and its parts one by one.

Quality: synthetic clips (sprites on known paths, tests/tracking_clips.py) with the true boxes
fed as the model's detections, and the bundled sample (pans/zooms over photos, whose motion is
known): mean IoU with the truth on the frames the model did not see, against holding the
last boxes.

    PYTHONPATH=$PWD .venv/bin/python scripts/track_benchmark.py
    PYTHONPATH=$PWD .venv/bin/python scripts/track_benchmark.py --repeat 2 --skip-quality
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Dict

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.tracking import FileTracker, Flow, LiveTracker, Tracker, prepare  # noqa: E402
from streamer.tracking.cuts import CutDetector  # noqa: E402
from tests.tracking_clips import (SAMPLE_SHOT, SCENES, crowd, id_switches, iou, render, run_file,  # noqa: E402
                                  run_live, sample_frames, sample_photo_box, sample_truth)


def figures(per_frame: np.ndarray) -> str:
    """per_frame: repeats x frames, seconds. The mean over frames of each frame's best repeat
    (about what an unloaded core takes: other processes only ever add time) and the median of
    all (what this machine gave, load included)."""
    best = 1000 * per_frame.min(axis=0).mean()
    return f"{best:6.2f} ms best-of-{per_frame.shape[0]} mean, {1000 * np.median(per_frame):6.2f} ms median"


def timed(fn: Callable[[], object], repeat: int, calls: int = 5) -> np.ndarray:
    """repeat x 1 seconds per call (each the mean of `calls` calls)."""
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        out.append([(time.perf_counter() - started) / calls])
    return np.array(out)


def live_costs(frames, truth, latency: int = 15):
    """Seconds per pushed frame (push + the answers that arrived just before it) and per answer,
    as a live run drives the stage: an answer for frame k arrives before frame k + latency is
    pushed, and the model then takes the newest frame."""
    stage, busy = LiveTracker(), None
    per_frame, answers = [], []
    for frame in frames:
        spent = 0.0
        if busy is not None and frame.index >= busy + latency:
            started = time.perf_counter()
            stage.answer(frames[busy], truth.detections(busy))
            answers.append(time.perf_counter() - started)
            spent += answers[-1]
            busy = None
        started = time.perf_counter()
        list(stage.push(frame, None))
        per_frame.append(spent + time.perf_counter() - started)
        if busy is None:
            busy = frame.index
    return per_frame, answers


def file_costs(frames, truth, every: int = 5):
    stage, per_frame = FileTracker(every), []
    for frame in frames:
        detections = truth.detections(frame.index) if frame.index % every == 0 else None
        started = time.perf_counter()
        list(stage.push(frame, detections))
        per_frame.append(time.perf_counter() - started)
    return per_frame


def cost(repeat: int) -> None:
    frames, truth = render(crowd(121))
    print(f"Cost per 640x480 frame, 10 objects, cv2.setNumThreads(1) ({len(frames)} frames, {repeat} repeats):")
    runs = [live_costs(frames, truth) for _ in range(repeat)]
    per_frame = np.array([r[0] for r in runs])[:, 15:]  # from the first answer on
    answers = np.array([r[1] for r in runs])
    print(f"  {'live stage, per pushed frame (answer every 15th, 15 late):':62} {figures(per_frame)}")
    print(f"  {'  of which one answer (match + catch-up of 15 frames):':62} {figures(answers)}")
    per_frame = np.array([file_costs(frames, truth) for _ in range(repeat)])
    print(f"  {'file stage, --infer-every 5, per frame:':62} {figures(per_frame)}")

    image, nxt = frames[30].image, frames[31].image
    a, b = prepare(image), prepare(nxt)
    boxes = truth.detections(30).boxes
    flow, cuts = Flow(), CutDetector()
    tracker = Tracker()
    tracker.update(truth.detections(25), 1.0)
    n = 30 * repeat
    print("  parts:")
    parts = [
        ("grey copy (prepare)", lambda: prepare(image)),
        ("cut detector", lambda: cuts.update(image)),
        (f"flow, 10 boxes, {flow.grid * flow.grid} points each", lambda: flow.carry(a, b, boxes)),
        ("tracker update, 10 boxes, 10 tracks", lambda: tracker.update(truth.detections(30), 1.2)),
    ]
    for label, fn in parts:
        print(f"    {label + ':':48} {figures(timed(fn, n))}")
    for width, height in ((1280, 720), (1920, 1080), (3840, 2160)):
        big = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        label = f"prepare + cuts, {width}x{height}:"
        print(f"    {label:48} {figures(timed(lambda big=big: (prepare(big), cuts.update(big)), n // 2))}")


def hold_iou(run) -> float:
    """Mean IoU of the boxes of the last inferred frame held on the frames after it."""
    values = []
    for i in run.between():
        last = max(j for j in run.inferred if j < i) if any(j < i for j in run.inferred) else None
        for key, (_, box) in run.truth.boxes[i].items():
            held = run.truth.boxes[last].get(key) if last is not None else None
            values.append(iou(box, held[1]) if held else 0.0)
    return float(np.mean(values)) if values else float("nan")


def quality() -> None:
    print("\nFiles: mean IoU with the truth on frames the model did not see; id switches over all sprites")
    print("  (tracked: the stage; linear: follow_flow=False; held: the last inferred frame's box. A sprite")
    print("  that comes back after leaving, and every sprite after a cut, gets a new id: a switch here)")
    print(f"  {'scene':9} {'N':>3} {'jitter':>6} | {'tracked':>7} {'linear':>7} {'held':>7} | switches")
    for name, scene in SCENES.items():
        for every in (5, 10):
            for jitter in (0.0, 0.03):
                run = run_file(scene(), every, jitter=jitter)
                linear = run_file(scene(), every, stage=FileTracker(every, follow_flow=False), jitter=jitter)
                switches = sum(id_switches(run.ids(k)) for k in run.truth.keys(0))
                print(f"  {name:9} {every:3d} {jitter:6.2f} | {run.mean_iou():7.3f} {linear.mean_iou():7.3f} "
                      f"{hold_iou(run):7.3f} | {switches}")

    print("\nLive: mean IoU with the truth on displayed frames, answers `latency` frames late (model rate 1/latency)")
    print(f"  {'scene':9} {'latency':>7} | {'tracked':>7} {'held':>7}")
    for name, scene in SCENES.items():
        for latency in (4, 8, 15):
            run = run_live(scene(), latency=latency)
            print(f"  {name:9} {latency:7d} | {run.mean_iou('shown', latency):7.3f} {run.mean_iou('held', latency):7.3f}")

    print("\nSample clip: a box fixed in a photo, carried by flow frame to frame from its shot's first frame")
    frames = sample_frames(ROOT / "samples" / "sample.mp4")
    greys = [prepare(f.image) for f in frames]
    flow = Flow()
    carried: Dict[int, list] = {1: [], 5: [], 11: []}
    held: Dict[int, list] = {1: [], 5: [], 11: []}
    for shot in range(len(frames) // SAMPLE_SHOT):
        for frame_box in ((200, 150, 440, 330), (60, 60, 200, 200), (400, 250, 600, 440)):
            photo_box = sample_photo_box(shot, frame_box)
            first = shot * SAMPLE_SHOT
            box = sample_truth(first, photo_box)
            for i in range(first + 1, first + SAMPLE_SHOT):
                box = flow.carry(greys[i - 1], greys[i], box[None])[0][0]
                if i - first in carried:
                    truth = sample_truth(i, photo_box)
                    carried[i - first].append(iou(box, truth))
                    held[i - first].append(iou(sample_truth(first, photo_box), truth))
    for k, values in carried.items():
        print(f"  {k:2d} frames after: flow {np.mean(values):.3f} (min {min(values):.3f}), held {np.mean(held[k]):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    cost(args.repeat)
    if not args.skip_quality:
        quality()


if __name__ == "__main__":
    main()
