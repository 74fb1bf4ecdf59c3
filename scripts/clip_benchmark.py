"""What event clips cost per camera: the encoded-packet ring's memory and the extra encode's CPU.

A 720p 25 fps camera is simulated by panning a 1280x720 window across the bundled sample's photos
(scaled up), with or without sensor grain (real cameras' noise costs bits); the frames go through
a ClipRecorder (the --clips sink: x264 at the recorder's preset, a keyframe every second) with
--pre-capture 5. Reported per configuration: the ring's size in steady state and at its peak (MB),
the video's bitrate, and the process CPU time per frame (the encode plus the RGB->YUV conversion;
x264's own threads included), against raw frames for the same 5 s.

    PYTHONPATH=$PWD .venv/bin/python scripts/clip_benchmark.py
    PYTHONPATH=$PWD .venv/bin/python scripts/clip_benchmark.py --seconds 10 --presets veryfast
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.events.clips import QUEUE, ClipRecorder  # noqa: E402
from streamer.events.destinations import ClipSettings  # noqa: E402
from streamer.frames import Frame  # noqa: E402

WIDTH, HEIGHT, RATE = 1280, 720, 25
TB = Fraction(1, 90000)
POOL = 48  # distinct frames held for the simulation (the sample's), cycled with a moving pan


def photos() -> list:
    """The sample's frames scaled to 1.5x 720p (room to pan in)."""
    with av.open(str(ROOT / "samples" / "sample.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)][:POOL]
    return [cv2.resize(f, (WIDTH * 3 // 2, HEIGHT * 3 // 2), interpolation=cv2.INTER_LINEAR) for f in frames]


def grains(level: float, count: int = 16) -> list:
    """Sensor noise fields (int16, 2x2-pixel grains), cycled over the frames."""
    rng = np.random.default_rng(1)
    fields = []
    for _ in range(count):
        noise = rng.normal(0, level, (HEIGHT // 2, WIDTH // 2, 1)).astype(np.float32)
        fields.append(np.round(cv2.resize(noise, (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST))
                      .astype(np.int16)[..., None])
    return fields


def frame_at(pool: list, i: int, noise: list) -> np.ndarray:
    big = pool[i % len(pool)]
    x = int((i * 3) % (big.shape[1] - WIDTH))
    y = int((i * 2) % (big.shape[0] - HEIGHT))
    image = big[y:y + HEIGHT, x:x + WIDTH]
    if noise:
        image = np.clip(image + noise[i % len(noise)], 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def cpu() -> float:
    """The process's CPU seconds, every thread (the recorder's and x264's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(preset: str, grain: float, seconds: float, pre: float, pool: list) -> dict:
    noise = grains(grain) if grain else []
    frames = int(seconds * RATE)
    feed_cpu = 0.0  # the main thread's: making the frames (not the recorder's work)
    with tempfile.TemporaryDirectory() as folder:
        recorder = ClipRecorder("bench", ClipSettings(Path(folder), pre_capture=pre), print, lossless=True,
                                preset=preset)
        steady = []
        started, cpu0 = time.monotonic(), cpu()
        with recorder:
            for i in range(frames):
                t0 = time.thread_time()
                image = frame_at(pool, i, noise)
                feed_cpu += time.thread_time() - t0
                step = TB.denominator // RATE
                recorder.write(Frame(i, i * step, TB, time.monotonic(), image, duration=step), image, None)
                if i > (pre + 2) * RATE:
                    steady.append(recorder.ring.nbytes)
        wall, used = time.monotonic() - started, cpu() - cpu0 - feed_cpu
    ring = recorder.ring
    bitrate = 8 * float(np.mean(steady)) / max(ring.seconds, 1e-9) if steady else 0.0
    return {"preset": preset, "grain": grain, "frames": frames, "ring_mb": float(np.mean(steady)) / 1e6,
            "peak_mb": ring.peak_bytes / 1e6, "held_s": ring.seconds, "mbit_s": bitrate / 1e6,
            "cpu_ms": 1000 * used / frames, "wall_fps": frames / wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="video per configuration")
    parser.add_argument("--pre-capture", type=float, default=5.0)
    parser.add_argument("--presets", default="veryfast,ultrafast")
    parser.add_argument("--grain", default="0,3", help="sensor noise levels (std of 8-bit values), comma-separated")
    args = parser.parse_args()
    pool = photos()
    raw = WIDTH * HEIGHT * 3
    print(f"720p {RATE} fps, --pre-capture {args.pre_capture:g} s; raw frames for that long: "
          f"{raw * RATE * args.pre_capture / 1e6:.0f} MB; the encoder's queue holds at most {QUEUE} frames "
          f"({QUEUE * raw / 1e6:.0f} MB, only while the encoder is behind)")
    print(f"{'preset':<10} {'grain':>5} {'ring MB':>8} {'peak MB':>8} {'held s':>7} {'Mbit/s':>7} "
          f"{'CPU ms/frame':>13} {'fps':>6}")
    for preset in args.presets.split(","):
        for grain in (float(g) for g in args.grain.split(",")):
            r = measure(preset, grain, args.seconds, args.pre_capture, pool)
            print(f"{r['preset']:<10} {r['grain']:>5g} {r['ring_mb']:>8.2f} {r['peak_mb']:>8.2f} {r['held_s']:>7.2f} "
                  f"{r['mbit_s']:>7.2f} {r['cpu_ms']:>13.1f} {r['wall_fps']:>6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
