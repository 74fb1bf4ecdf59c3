"""Watch benchmark: N cameras x 25 fps (640x480 RTSP on 127.0.0.1) sharing one embedded Triton.

Starts one scripts/rtsp_camera.py per camera, runs a single-camera `streamer run` for the
baseline detection rate, then `streamer watch` on all cameras, and prints per camera:
display fps / source fps (goal 1.0), detection refresh (goal: within +-20 % of each other),
frame age p95 per interval (flat), then total detections/s / the single-camera rate
(goal >= 0.9) and the process RSS at start and end (flat).

    .venv/bin/python scripts/watch_benchmark.py                       # 4 cameras, 5 minutes, headless
    .venv/bin/python scripts/watch_benchmark.py --minutes 1 --show     # the mosaic window (needs DISPLAY)

Figures are printed, never asserted: machines differ.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_benchmark import STREAMER, exported_repo, write_clip  # noqa: E402

from streamer.server import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STATUS = re.compile(r"^(?:(\S+): )?\[(\d+) s\] display ([\d.]+) fps, detections ([\d.]+)/s, "
                    r"frame age p50 (\d+) ms p95 (\d+) ms")
TOTAL_DET = re.compile(r"detections ([\d.]+)/s")


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def start_cameras(clip: Path, n: int):
    cameras, urls = [], []
    for i in range(n):
        port = free_port()
        proc = subprocess.Popen(["/usr/bin/python3", str(ROOT / "scripts" / "rtsp_camera.py"), str(clip),
                                 "--port", str(port), "--path", f"/cam{i + 1}"], stdout=subprocess.PIPE, text=True)
        if not proc.stdout.readline().startswith("ready"):
            raise SystemExit("the RTSP camera did not start (apt: python3-gi gir1.2-gst-rtsp-server-1.0 "
                             "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)")
        cameras.append(proc)
        urls.append(f"rtsp://127.0.0.1:{port}/cam{i + 1}")
    return cameras, urls


def run(cmd, seconds: float):
    """Run a streamer command for `seconds`, then SIGINT it; (stdout, stderr, rss samples)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines = []
    reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
    reader.start()
    rss = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        rss.append(rss_mb(proc.pid))
        time.sleep(5)
    proc.send_signal(2)
    out = proc.stdout.read()
    proc.wait(120)
    reader.join(10)
    return out, "".join(err_lines), rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--baseline-minutes", type=float, default=1.0)
    parser.add_argument("--model-repo", type=Path, default=None)
    parser.add_argument("--show", action="store_true", help="the mosaic window (needs a display)")
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--no-track", action="store_true", help="watch with --no-track (the held boxes of old)")
    parser.add_argument("--record", action="store_true", help="record every camera (--out-dir), as under overload")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="watch-bench-") as tmp:
        tmp = Path(tmp)
        repo = exported_repo(args.model_repo, tmp)
        clip = tmp / "camera.mp4"
        seconds = max(args.minutes, args.baseline_minutes) * 60 + 60
        print(f"writing a {seconds:.0f} s 25 fps 640x480 clip ...", flush=True)
        write_clip(clip, seconds)
        cameras, urls = start_cameras(clip, args.cameras)
        try:
            common = ["--model-repo", str(repo), "--status-every", str(args.interval)]
            print(f"baseline: one camera for {args.baseline_minutes} min ...", flush=True)
            out, _, _ = run(STREAMER + ["run", urls[0]] + common, args.baseline_minutes * 60)
            single = float(TOTAL_DET.search(out).group(1))
            print(f"  {out.strip()}")
            cmd = STREAMER + ["watch", *urls] + common + (["--show"] if args.show else []) \
                + (["--no-track"] if args.no_track else []) + (["--out-dir", str(tmp)] if args.record else [])
            print(f"watch: {args.cameras} cameras for {args.minutes} min{' with --show' if args.show else ''} ...",
                  flush=True)
            out, err, rss = run(cmd, args.minutes * 60)
        finally:
            for proc in cameras:
                proc.terminate()
                proc.wait(10)
    per_camera = {}
    for line in err.splitlines():
        m = STATUS.match(line)
        if m:
            per_camera.setdefault(m.group(1) or "cam1", []).append(
                (int(m.group(2)), float(m.group(3)), float(m.group(4)), int(m.group(6))))
    print("\n| camera | display fps / source fps | detections/s | frame age p95 per interval (ms) |")
    print("|---|---|---|---|")
    rates = {}
    for name, rows in sorted(per_camera.items()):
        rows = rows[1:] or rows  # the first interval includes the start-up
        display = sum(r[1] for r in rows) / len(rows)
        rates[name] = sum(r[2] for r in rows) / len(rows)
        print(f"| {name} | {display / 25:.3f} | {rates[name]:.2f} | {', '.join(str(r[3]) for r in rows)} |")
    if rates:
        mean = sum(rates.values()) / len(rates)
        spread = max(abs(r - mean) / mean for r in rates.values()) if mean else float("nan")
        print(f"\ndetection refresh spread: +-{spread * 100:.1f} % around {mean:.2f}/s per camera")
        print(f"total detections/s {sum(rates.values()):.2f} / single camera {single:.2f} = "
              f"{sum(rates.values()) / single:.2f}")
    print(f"RSS: {rss[1] if len(rss) > 1 else rss[0]:.0f} MB after 5 s, {rss[-1]:.0f} MB at the end "
          f"({len(rss)} samples)")
    print(out.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
