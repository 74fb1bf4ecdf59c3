"""What durable recording costs and what a kill still puts at risk (docs/recording.md's figures).

No server: the media path alone, on the bundled sample's pictures (640x480 photographs panned and
zoomed) looped to --frames frames at 25 fps.

1. Overhead: the same frames through the mp4 sink as it was before (one file, moov written at the
   end, x264's own GOP: 250 frames) and as it is now (fragmented while writing, a keyframe every
   second, the encoder's look-ahead capped, then copied into a moov-first file): encode fps (A/B in
   the same run, best of --repeat), the finishing copy's time, file sizes.
2. At risk: a process writing through the sink is SIGKILLed after a seeded number of frames; what
   the kill left is read back; the frames (seconds of video) and bytes lost.
3. Segments: 60 s of a 25 fps camera in 10 s segments (LiveRecorder, the index, the finishing copy
   off the video thread): files, bytes per segment, index bytes per segment.

    PYTHONPATH=$PWD .venv/bin/python scripts/recording_benchmark.py
    PYTHONPATH=$PWD .venv/bin/python scripts/recording_benchmark.py --frames 300 --kills 12 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import List

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.frames import Frame  # noqa: E402
from streamer.media import PictureFormat  # noqa: E402
from streamer.recording import fragments  # noqa: E402
from streamer.recording.segments import LiveRecorder, SegmentIndex  # noqa: E402
from streamer.sinks import Mp4Sink  # noqa: E402

RATE = 25
TB = Fraction(1, RATE)


def pictures(count: int) -> List[np.ndarray]:
    with av.open(str(ROOT / "samples" / "sample.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return [frames[i % len(frames)] for i in range(count)]


def before(path: Path, images: List[np.ndarray]) -> float:
    """The sink as it was: moov at the end (+faststart), x264's own GOP. Seconds to write."""
    started = time.perf_counter()
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = images[0].shape[1], images[0].shape[0], "yuv420p"
        stream.time_base = stream.codec_context.time_base = TB
        stream.options = {"crf": "23", "preset": "veryfast", "bf": "0"}
        colour = PictureFormat().colour
        for i, image in enumerate(images):  # the sink's own conversion (its colour matrix and range)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
                format="yuv420p", dst_colorspace=colour.sws_space(), dst_color_range="MPEG")
            frame.pts, frame.time_base = i, TB
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return time.perf_counter() - started


def now(path: Path, images: List[np.ndarray]) -> tuple:
    """The sink as it is. (seconds to write the fragmented file, seconds to finish it)."""
    sink = Mp4Sink(path, images[0].shape[1], images[0].shape[0], TB, Fraction(RATE), finish=False)
    started = time.perf_counter()
    with sink:
        for i, image in enumerate(images):
            sink.write(Frame(i, i, TB, 0.0, image), image, None)
    written = time.perf_counter() - started
    started = time.perf_counter()
    fragments.join([sink.partial], path, path.with_suffix(".finishing.mp4"))
    finished = time.perf_counter() - started
    sink.partial.unlink()
    return written, finished


WRITER = r"""
import sys, time
from fractions import Fraction
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from scripts.recording_benchmark import TB, RATE, pictures
from streamer.frames import Frame
from streamer.sinks import Mp4Sink
n, out = int(sys.argv[1]), Path(sys.argv[2])
images = pictures(n)
with Mp4Sink(out, images[0].shape[1], images[0].shape[0], TB, Fraction(RATE)) as sink:
    print(sink.partial, flush=True)
    for i, image in enumerate(images):
        sink.write(Frame(i, i, TB, 0.0, image), image, None)
    print("written", flush=True)
    time.sleep(600)
"""


def at_risk(folder: Path, counts: List[int]) -> List[tuple]:
    """(frames written, frames kept) for a writer SIGKILLed after each count."""
    found = []
    for n in counts:
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(n), str(folder / "k.mp4"), str(ROOT)],
                                stdout=subprocess.PIPE, text=True)
        partial = Path(proc.stdout.readline().strip())
        assert proc.stdout.readline().strip() == "written"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        try:
            kept = fragments.scan(partial).frames
        except (OSError, ValueError):
            kept = 0
        found.append((n, kept))
        partial.unlink(missing_ok=True)
    return found


def segments(folder: Path, images: List[np.ndarray], seconds: float = 60.0) -> dict:
    """A 25 fps camera for `seconds` of its clock in 10 s segments (as fast as it encodes)."""
    epoch = 1_800_000_000.0
    rec = LiveRecorder(folder, Fraction(RATE), Fraction(1, 90000), segment_s=10.0, camera="bench",
                       clock=lambda: time.monotonic() + epoch)
    started = time.perf_counter()
    with rec:
        for i in range(int(seconds * RATE)):
            t = 0.01 + i / RATE
            image = images[i % len(images)]
            rec.write(Frame(i, round(t * 90000), Fraction(1, 90000), t, image), image, None)
    elapsed = time.perf_counter() - started
    entries = SegmentIndex(folder).entries()
    index_bytes = (folder / "index.jsonl").stat().st_size
    return {"segments": len(entries), "bytes": [e["bytes"] for e in entries], "elapsed": elapsed,
            "index_per_segment": index_bytes / max(1, len(entries)), "frames": sum(e["frames"] for e in entries)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--seed", type=int, default=23)
    args = parser.parse_args()
    images = pictures(args.frames)
    h, w = images[0].shape[:2]
    print(f"{args.frames} frames {w}x{h} at {RATE} fps (samples/sample.mp4 looped), load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        old, new, finish = [], [], []
        for _ in range(args.repeat):  # A/B in turn, best of each
            old.append(before(folder / "before.mp4", images))
            written, finished = now(folder / "now.mp4", images)
            new.append(written)
            finish.append(finished)
        old_size, new_size = (folder / "before.mp4").stat().st_size, (folder / "now.mp4").stat().st_size
        fps_old, fps_new = args.frames / min(old), args.frames / min(new)
        print(f"overhead: before {fps_old:.1f} fps, now {fps_new:.1f} fps while writing ({fps_new / fps_old:.2f}x); "
              f"finishing copy {min(finish) * 1000:.0f} ms for {args.frames / RATE:.0f} s of video "
              f"({min(finish) / (args.frames / RATE) * 1000:.1f} ms per second of video)")
        print(f"size: before {old_size / 1e3:.0f} kB, now {new_size / 1e3:.0f} kB ({new_size / old_size:.2f}x: "
              f"a keyframe every second instead of every {250 / RATE:.0f} s)")
        rng = random.Random(args.seed)
        counts = sorted(rng.sample(range(30, args.frames), args.kills))
        kills = at_risk(folder, counts)
        lost = [(n - kept) / RATE for n, kept in kills]
        per_frame = new_size / args.frames
        print(f"at risk ({len(kills)} SIGKILLs after {counts[0]}-{counts[-1]} frames): lost "
              f"mean {statistics.mean(lost):.2f} s, max {max(lost):.2f} s of video "
              f"(max {max(n - k for n, k in kills)} frames, about {max(lost) * RATE * per_frame / 1e3:.0f} kB); "
              f"every kill left the frames before playable")
        seg = segments(folder / "cam", images)
        print(f"segments (10 s, 60 s of camera): {seg['segments']} files, {statistics.mean(seg['bytes']) / 1e3:.0f} kB "
              f"each, {seg['frames']} frames in all, index {seg['index_per_segment']:.0f} bytes a segment; "
              f"8640 files a day a camera; written at {seg['frames'] / seg['elapsed']:.0f} fps "
              "(the finishing copies run on their own thread)")


if __name__ == "__main__":
    main()
