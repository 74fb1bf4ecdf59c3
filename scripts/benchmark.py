"""Speed of each model on this machine: end-to-end fps vs. the server's own time per frame.

For each configuration: export (random weights unless --weights), run `streamer run` on
the sample with the embedded Triton server, writing the annotated mp4, and read its
accounting line. Figures belong
here and in notes, not in test asserts.

    .venv/bin/python scripts/benchmark.py                  # all configurations
    .venv/bin/python scripts/benchmark.py --max-frames 12 --only v2-800
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sample.mp4"

CONFIGS = {
    "v2-800": ["--arch", "fasterrcnn_resnet50_fpn_v2"],
    "v2-480-p300": ["--arch", "fasterrcnn_resnet50_fpn_v2", "--min-size", "480", "--max-size", "640",
                    "--proposals", "300"],
    "mobilenet_fpn": ["--arch", "fasterrcnn_mobilenet_v3_large_fpn"],
    "mobilenet_320_fpn": ["--arch", "fasterrcnn_mobilenet_v3_large_320_fpn"],
}

LINE = re.compile(
    r"frames: read (?P<read>\d+), inferred (?P<inferred>\d+), written (?P<written>\d+), failed (?P<failed>\d+)"
    r".*?\| (?P<fps>[\d.]+) fps \| latency p50 (?P<p50>\d+) ms p95 (?P<p95>\d+) ms"
    r"(?: \| server (?P<server>\d+) ms/frame)?"
)


def streamer(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer", *map(str, args)], capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--weights", default="random", help="coco, random or a .pth (default: random)")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--in-flight", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--input", type=Path, default=SAMPLE)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            repo = Path(tmp) / name
            started = time.monotonic()
            exported = streamer("export-model", "--repo", repo, "--weights", args.weights, *CONFIGS[name])
            if exported.returncode:
                sys.exit(f"{name}: export failed: {exported.stderr.strip().splitlines()[-1]}")
            export_s = time.monotonic() - started
            for in_flight in args.in_flight:
                run_args = ["run", args.input, "--model-repo", repo, "--in-flight", in_flight,
                            "--out", Path(tmp) / "out.mp4", "--overwrite"]
                if args.max_frames:
                    run_args += ["--max-frames", args.max_frames]
                result = streamer(*run_args)
                match = LINE.search(result.stdout)
                if result.returncode or not match:
                    sys.exit(f"{name}: run failed ({result.returncode}): {result.stderr[-500:]}")
                row = dict(config=name, in_flight=in_flight, export_s=f"{export_s:.1f}", **match.groupdict())
                rows.append(row)
                print(f"{name} in-flight {in_flight}: {match.group(0)}", flush=True)

    print("\n| config | in flight | frames | end-to-end fps | latency p50 / p95 (ms) | server ms/frame | export s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['in_flight']} | {r['written']} | {r['fps']} | {r['p50']} / {r['p95']} | "
              f"{r['server'] or '-'} | {r['export_s']} |")


if __name__ == "__main__":
    main()
