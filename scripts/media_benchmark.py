"""What real-world media costs: a run with and without --no-audio on a clip with AAC, the same for
`render` (no server: the media path alone), and the start lines of a rotated+AAC, an HDR and an
anamorphic run. One server (MobileNet 320, random weights) serves every run.

    PYTHONPATH=$PWD .venv/bin/python scripts/media_benchmark.py            # 300 frames 640x360
    PYTHONPATH=$PWD .venv/bin/python scripts/media_benchmark.py --frames 90 --repeat 1
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.server import start_on_free_ports  # noqa: E402
from tests.media_inputs import Audio, make_input  # noqa: E402


def streamer(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer", *map(str, args)], capture_output=True, text=True)


def timed(*args) -> float:
    started = time.monotonic()
    result = streamer(*args)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"streamer {' '.join(map(str, args))} failed:\n{result.stderr}")
    return elapsed


def start_line(stderr: str, name: str) -> str:
    return next((line for line in stderr.splitlines() if line.startswith(f"{name}:")), "(no start line)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each kind, alternated")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        aac = make_input(tmp / "aac.mp4", count=args.frames, width=640, height=360, audio=[Audio("aac")])
        phone = make_input(tmp / "phone.mp4", count=30, width=640, height=360, rotation=90, audio=[Audio("aac")])
        hdr = make_input(tmp / "hlg.mp4", count=30, width=640, height=360, vcodec="libx265", pix_fmt="yuv420p10le",
                         colour=(1, 9, 9, 18), vopts={"x265-params": "log-level=error"})
        dv = make_input(tmp / "dv.mp4", count=30, width=720, height=480, sar=Fraction(32, 27), audio=[Audio("pcm_s16le")],
                        format="mov")
        repo = tmp / "repo"
        result = streamer("export-model", "--repo", repo, "--arch", "fasterrcnn_mobilenet_v3_large_320_fpn",
                          "--weights", "random")
        if result.returncode:
            sys.exit(result.stderr)
        server = start_on_free_ports(repo, threads=0, startup_timeout=300)
        try:
            url = server.grpc_url
            jsonl = tmp / "run.jsonl"
            streamer("run", aac, "--detections", jsonl, "--triton", url)  # warm the model up, and a log
            times = {"run": [], "run --no-audio": [], "render": [], "render --no-audio": []}
            for _ in range(args.repeat):
                times["run"].append(timed("run", aac, "--out", tmp / "a.mp4", "--overwrite", "--triton", url))
                times["run --no-audio"].append(timed("run", aac, "--out", tmp / "b.mp4", "--overwrite",
                                                     "--no-audio", "--triton", url))
                times["render"].append(timed("render", aac, "--detections", jsonl, "--out", tmp / "c.mp4",
                                             "--overwrite"))
                times["render --no-audio"].append(timed("render", aac, "--detections", jsonl, "--out",
                                                        tmp / "d.mp4", "--overwrite", "--no-audio"))
            print(f"{args.frames} frames 640x360 with AAC 48 kHz stereo; wall seconds per command (best of "
                  f"{args.repeat}, process start included):")
            for kind, values in times.items():
                print(f"  {kind:<20} {min(values):6.2f} s   ({', '.join(f'{v:.2f}' for v in values)})")
            print(f"  audio costs run x{min(times['run']) / min(times['run --no-audio']):.3f}, "
                  f"render x{min(times['render']) / min(times['render --no-audio']):.3f}")
            print("start lines:")
            for clip in (phone, hdr, dv):
                result = streamer("run", clip, "--out", tmp / f"out-{clip.stem}.mp4", "--triton", url)
                print("  " + start_line(result.stderr, clip.name))
        finally:
            server.stop()
            server.cleanup()


if __name__ == "__main__":
    main()
