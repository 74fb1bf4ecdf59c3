"""Motion-gated inference (issue 26): what it costs and what it buys.

    cost    the motion detector per frame at 480p and 1080p, one OpenCV thread (goal <= 1 ms at
            1080p): from the frame (no tracker), and from the grey copy a tracker makes anyway
            (whose own cost is printed beside).
    watch   4 RTSP cameras (25 fps, 320x240) sharing one server through `streamer watch`, 1 with
            traffic and 3 still, `--infer-on always` then `--infer-on motion`: answers per second
            and detection age (p50 of the age of the answer behind the drawn boxes, per shown
            frame) per camera; the busy camera's answers/s ratio motion / always (goal >= 3).
    file    a long still clip with a few short events through `streamer run`, always then motion:
            fps and frames inferred; the fps ratio (goal >= 5).

The model is the sprite detector of tests/sprites.py, made slow without using CPU (Triton's
dynamic batcher holds each lone request --delay-ms): a model much slower than the cameras, as
Faster R-CNN on a CPU is, whose speed does not depend on how loaded this machine is.

    PYTHONPATH=$PWD .venv/bin/python scripts/motion_benchmark.py cost
    PYTHONPATH=$PWD .venv/bin/python scripts/motion_benchmark.py watch --seconds 20
    PYTHONPATH=$PWD .venv/bin/python scripts/motion_benchmark.py file --seconds 60

Figures are printed, never asserted: machines differ.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.frames import Frame  # noqa: E402
from streamer.grey import grey_of  # noqa: E402
from streamer.motion import MotionDetector  # noqa: E402

STREAMER = str(ROOT / ".venv" / "bin" / "streamer")


# -- cost -----------------------------------------------------------------------------------------

def cost(args) -> None:
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    print("motion detector per frame, one OpenCV thread: CPU time of this thread (a loaded machine's waiting "
          "left out), median of each repeat, best / worst of 3, ms:")
    for w, h in ((854, 480), (1920, 1080)):
        base = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        base = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
        images = [np.clip(base.astype(np.int16) + rng.integers(-6, 7, (h, w, 3)), 0, 255).astype(np.uint8)
                  for _ in range(8)]
        own, shared, grey = [], [], []
        for _ in range(3):
            detector, tracked = MotionDetector(), MotionDetector(source_width=640)
            a, b, g = [], [], []
            for i in range(args.frames):
                frame = Frame(i, i, None, i / 25, images[i % len(images)])
                started = time.thread_time()
                detector.detect(frame, i / 25)
                a.append(time.thread_time() - started)
                frame = replace(frame)
                started = time.thread_time()
                grey_of(frame, 640)  # what the tracker's flow and the cut test make anyway
                g.append(time.thread_time() - started)
                started = time.thread_time()
                tracked.detect(frame, i / 25)
                b.append(time.thread_time() - started)
            own.append(a)
            shared.append(b)
            grey.append(g)

        def figure(runs) -> str:
            medians = np.median(np.array(runs) * 1000, axis=1)
            return f"{medians.min():.2f} / {medians.max():.2f}"

        print(f"  {w}x{h}: from the frame {figure(own)}; from the tracker's grey copy {figure(shared)} "
              f"(the grey copy itself {figure(grey)}, made anyway with tracking)")


# -- shared: the sprite server and footage --------------------------------------------------------

def sprite_server(root: Path, delay_ms: float):
    from streamer.server import start_on_free_ports
    from tests import sprites

    repo = sprites.export_sprites(root / "repo", max_queue_delay_us=int(delay_ms * 1000))
    return start_on_free_ports(repo, threads=1, startup_timeout=300)


def busy_footage(frames: int, seed: int):
    from tests import motion_clips as M

    def circling(colour, cx, cy, r, speed):
        return M.Thing(colour, lambda i: M.box(cx + r * math.cos(speed * i), cy + r * math.sin(speed * i), 40, 50))

    return M.Footage("busy", frames, seed=seed, things=[circling(M.RED, 100, 130, 50, 0.08),
                                                        circling(M.BLUE, 230, 120, 40, -0.1)])


def summary_of(cmd, timeout: float) -> dict:
    summary = Path(tempfile.mktemp(suffix=".json"))
    started = time.monotonic()
    result = subprocess.run([*map(str, cmd), "--summary", str(summary)], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd[:3]))} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    report = json.loads(summary.read_text())
    summary.unlink()
    report["wall_s"] = time.monotonic() - started
    return report


# -- watch ----------------------------------------------------------------------------------------

def watch(args) -> None:
    from tests import motion_clips as M
    from tests.cameras import RtspCamera

    frames = int(args.seconds * 25)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = sprite_server(root, args.delay_ms)
        cameras = []
        try:
            scenes = [busy_footage(frames, 1)] + [M.Footage(f"still{i}", frames, seed=10 + i) for i in range(3)]
            for scene in scenes:
                cameras.append(RtspCamera(M.write(root / f"{scene.name}.mp4", scene)).start())
            names = [scene.name for scene in scenes]
            config = root / "cameras.yaml"
            config.write_text("cameras:\n" + "".join(f"  {n}:\n    source: {c.url}\n" for n, c in zip(names, cameras)))
            results = {}
            for mode in ("always", "motion"):
                report = summary_of([STREAMER, "watch", config, "--triton", server.grpc_url, "--max-frames", frames,
                                     "--status-every", "0", "--infer-on", mode], timeout=args.seconds * 4 + 120)
                results[mode] = {s["name"]: s for s in report["streams"]}
        finally:
            for camera in cameras:
                camera.stop()
            server.stop()
            server.cleanup()
    print(f"4 cameras x {args.seconds:.0f} s at 25 fps, one server answering in about {args.delay_ms:.0f} ms "
          "(one request at a time):")
    print(f"  {'camera':8} {'mode':7} {'answers/s':>9} {'detection age p50':>18} {'skipped still':>14}")
    for name in names:
        for mode in ("always", "motion"):
            s = results[mode][name]
            rate = s["frames"]["inferred"] / args.seconds
            age = s["detection_age_ms"]["p50"]
            print(f"  {name:8} {mode:7} {rate:9.2f} {age if age is not None else float('nan'):15.0f} ms "
                  f"{s['skipped_by_reason']['still']:14d}")
    busy = [results[m][names[0]]["frames"]["inferred"] for m in ("always", "motion")]
    print(f"  busy camera's answers, motion / always: {busy[1] / max(1, busy[0]):.2f}x")


# -- file -----------------------------------------------------------------------------------------

def still_clip_with_events(path: Path, seconds: float, events: int = 3, event_s: float = 2.0):
    """A still camera-like clip with `events` people crossing, each for `event_s`, spread evenly."""
    from tests import motion_clips as M

    frames = int(seconds * 25)
    span = int(event_s * 25)
    starts = [int((k + 0.5) * frames / events - span / 2) for k in range(events)]
    things = [M.Thing(M.RED, M.crossing(s, span, 346 / span, 120, (26, 44), 320), f"p{k}")
              for k, s in enumerate(starts)]
    return M.write(path, M.Footage("events", frames, things=things)), frames, events * span


def file(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip, frames, moving = still_clip_with_events(root / "still.mp4", args.seconds)
        server = sprite_server(root, args.delay_ms)
        try:
            results = {}
            for mode in ("always", "motion"):
                results[mode] = summary_of([STREAMER, "run", clip, "--triton", server.grpc_url, "--out",
                                            root / f"{mode}.mp4", "--infer-on", mode, "--overwrite"],
                                           timeout=frames * 2 + 120)
        finally:
            server.stop()
            server.cleanup()
    print(f"a {args.seconds:.0f} s still clip (320x240, 25 fps, {frames} frames) with 3 people crossing "
          f"({moving} frames), model about {args.delay_ms:.0f} ms a request:")
    for mode, report in results.items():
        s = report["streams"][0]
        print(f"  {mode:7} inferred {s['frames']['inferred']:5d}, tracked {s['frames']['tracked']:5d}, "
              f"{s['fps']:7.2f} fps, {report['wall_s']:6.1f} s")
    ratio = results["motion"]["streams"][0]["fps"] / results["always"]["streams"][0]["fps"]
    print(f"  motion / always fps: {ratio:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["cost", "watch", "file"])
    parser.add_argument("--frames", type=int, default=300, help="cost: frames per repeat")
    parser.add_argument("--seconds", type=float, default=20.0, help="watch, file: length of the footage")
    parser.add_argument("--delay-ms", type=float, default=250.0, help="watch, file: the model's time a request")
    args = parser.parse_args()
    {"cost": cost, "watch": watch, "file": file}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
