"""Live benchmark: minutes of a 25 fps RTSP camera with a model slower than the stream.

Serves a synthetic 25 fps clip with scripts/rtsp_camera.py on 127.0.0.1, runs
`streamer run rtsp://... --status-every 30` against it and prints, per interval, display
fps, detection refresh rate and frame age, then the run's final accounting line. Frame age
staying flat over the run is the point: inference takes the newest frame, so no backlog grows.

    .venv/bin/python scripts/live_benchmark.py                 # mobilenet_320, 4 minutes, headless
    .venv/bin/python scripts/live_benchmark.py --minutes 1 --show   # with the window (needs DISPLAY)
    .venv/bin/python scripts/live_benchmark.py --model-repo model_repository   # your exported model

Figures are printed, never asserted: machines differ.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from streamer.server import free_port

ROOT = Path(__file__).resolve().parent.parent
STREAMER = [sys.executable, "-m", "streamer"]


def write_clip(path: Path, seconds: float, rate: int = 25, width: int = 640, height: int = 480) -> int:
    count = int(seconds * rate)
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(rate))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(count):
            img = np.empty((height, width, 3), np.uint8)
            img[..., 0] = (x + 3 * i) % 256
            img[..., 1] = (y + i) % 256
            img[..., 2] = 128
            cv2.putText(img, f"frame {i}", (20, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 4)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode(None))
    return count


def exported_repo(repo, tmp: Path) -> Path:
    """`repo` when given, else mobilenet_320 with random weights exported into `tmp`."""
    if repo is not None:
        return repo
    repo = tmp / "repo"
    print("exporting fasterrcnn_mobilenet_v3_large_320_fpn (random weights) ...", flush=True)
    subprocess.run(STREAMER + ["export-model", "--repo", str(repo), "--arch",
                               "fasterrcnn_mobilenet_v3_large_320_fpn", "--weights", "random"],
                   check=True, stdout=subprocess.DEVNULL)
    return repo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--model-repo", type=Path, default=None,
                        help="an exported repository (default: export mobilenet_320 with random weights)")
    parser.add_argument("--show", action="store_true", help="also show the window (needs a display)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds per status line")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="live-bench-") as tmp:
        tmp = Path(tmp)
        repo = exported_repo(args.model_repo, tmp)
        clip = tmp / "camera.mp4"
        seconds = args.minutes * 60 + 30  # the run stops before the camera's clip ends
        print(f"writing a {seconds:.0f} s 25 fps 640x480 clip ...", flush=True)
        frames = write_clip(clip, seconds)
        port = free_port()
        camera = subprocess.Popen(["/usr/bin/python3", str(ROOT / "scripts" / "rtsp_camera.py"), str(clip),
                                   "--port", str(port)], stdout=subprocess.PIPE, text=True)
        try:
            line = camera.stdout.readline()
            if not line.startswith("ready"):
                print("the RTSP camera did not start (apt: python3-gi gir1.2-gst-rtsp-server-1.0 "
                      "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)", file=sys.stderr)
                return 1
            max_frames = int(args.minutes * 60 * 25)
            cmd = STREAMER + ["run", f"rtsp://127.0.0.1:{port}/cam", "--model-repo", str(repo),
                              "--max-frames", str(max_frames), "--status-every", str(args.interval)]
            if args.show:
                cmd.append("--show")
            print(f"running {' '.join(cmd[2:])} ({min(max_frames, frames)} frames)", flush=True)
            started = time.monotonic()
            result = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        finally:
            camera.terminate()
            camera.wait(10)
    for line in result.stderr.splitlines():
        if re.match(r"\[\d+ s\]", line) or "dropped" in line or "back" in line:
            print("  " + line)
    print(result.stdout.strip())
    print(f"wall time {time.monotonic() - started:.0f} s, exit {result.returncode}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
