"""Memory benchmark: a real headless `streamer watch` left running, recording every camera.

N cameras x 25 fps (RTSP on 127.0.0.1, scripts/rtsp_camera.py), one embedded Triton
(mobilenet_320, random weights, unless --model-repo), `--out-dir` recordings, no window, no page
and no status lines (`--status-every 0`: nothing ever reads the HUD rates or the status
interval, the case where per-frame collections that are pruned only when read would grow).
The client's RSS (the `streamer` process) is sampled every few seconds from the moment the
pipeline starts (after the embedded server's start) and printed at 1, 2, 5 and 10 minutes (or
the run's length), with the growth from the first minute on.

    .venv/bin/python scripts/memory_benchmark.py                 # 2 cameras, 10 minutes
    .venv/bin/python scripts/memory_benchmark.py --minutes 60 --cameras 4

Figures are printed, never asserted: machines differ.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_benchmark import STREAMER, exported_repo, write_clip  # noqa: E402
from watch_benchmark import rss_mb, start_cameras  # noqa: E402

SAMPLE_S = 5.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--model-repo", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
        tmp = Path(tmp)
        repo = exported_repo(args.model_repo, tmp)
        clip = tmp / "camera.mp4"
        seconds = args.minutes * 60 + 120  # longer than the run: the cameras never end by themselves
        print(f"writing a {seconds:.0f} s 25 fps {args.width}x{args.height} clip ...", flush=True)
        write_clip(clip, seconds, width=args.width, height=args.height)
        cameras, urls = start_cameras(clip, args.cameras)
        out_dir = tmp / "recordings"
        out_dir.mkdir()
        cmd = STREAMER + ["watch", *urls, "--model-repo", str(repo), "--out-dir", str(out_dir), "--status-every", "0"]
        print(f"watch: {args.cameras} cameras for {args.minutes} min, recording, headless ...", flush=True)
        samples = []  # (seconds since start, RSS MB)
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            err_lines = []
            reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
            reader.start()
            while proc.poll() is None and not any(line.startswith("inference: model") for line in err_lines):
                time.sleep(0.5)  # the clock starts when the pipeline does (after the server's start)
            started = time.monotonic()
            while time.monotonic() - started < args.minutes * 60 and proc.poll() is None:
                samples.append((time.monotonic() - started, rss_mb(proc.pid)))
                time.sleep(SAMPLE_S)
            samples.append((time.monotonic() - started, rss_mb(proc.pid)))
            proc.send_signal(2)
            out = proc.stdout.read()
            proc.wait(120)
            reader.join(10)
            recorded = sum(p.stat().st_size for p in out_dir.glob("*.mp4")) / 1e6
        finally:
            for camera in cameras:
                camera.terminate()
                camera.wait(10)
    if proc.returncode not in (0, 130):
        print("".join(err_lines[-20:]))
        print(f"watch exited {proc.returncode}")
        return 1

    def at(minute: float) -> float:
        return min(samples, key=lambda s: abs(s[0] - minute * 60))[1]

    marks = [m for m in (1, 2, 5, 10, 30, 60) if m <= args.minutes] or [args.minutes]
    if marks[-1] != args.minutes:
        marks.append(args.minutes)
    print("\n| minute | client RSS (MB) |\n|---|---|")
    for minute in marks:
        print(f"| {minute:g} | {at(minute):.0f} |")
    first = [rss for t, rss in samples if t >= 60] or [samples[-1][1]]
    print(f"\nRSS at {marks[-1]:g} min / at 1 min: {at(marks[-1]) / at(1):.3f}; "
          f"from minute 1 on: min {min(first):.0f} MB, max {max(first):.0f} MB ({len(samples)} samples); "
          f"{recorded:.0f} MB recorded")
    print(out.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
