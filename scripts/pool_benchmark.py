"""Pool benchmark: one file through 1 server (2 threads) vs 2 servers (1 thread each).

Exports fasterrcnn_mobilenet_v3_large_320_fpn (random weights), starts the servers on free
loopback ports, runs `streamer run FILE --detections ... --triton ...` for each layout and
prints the fps, the ratio and the frames each server took. On a 2-core machine the cores are
shared either way, so the ratio is informative only; on a machine with a GPU per server it
is the point.

    .venv/bin/python scripts/pool_benchmark.py                 # 300 frames of 640x480
    .venv/bin/python scripts/pool_benchmark.py --frames 600 --in-flight 2
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_benchmark import STREAMER, exported_repo, write_clip  # noqa: E402

from streamer.server import EmbeddedServer, EmbeddedServerSettings, free_port  # noqa: E402

FPS = re.compile(r"\| ([\d.]+) fps")
SERVERS = re.compile(r"servers ([^;]+); moved (\d+)")


def serve(repo: Path, threads: int) -> EmbeddedServer:
    return EmbeddedServer(EmbeddedServerSettings(repo=repo, http_port=free_port(), grpc_port=free_port(),
                                         metrics_port=free_port(), threads=threads)).start()


def run(clip: Path, urls, out: Path, in_flight: int) -> str:
    result = subprocess.run(STREAMER + ["run", str(clip), "--triton", ",".join(urls), "--detections", str(out),
                                        "--overwrite", "--in-flight", str(in_flight)],
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"run failed ({result.returncode}): {result.stderr[-800:]}")
    return result.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--in-flight", type=int, default=2, help="requests in flight per server")
    parser.add_argument("--model-repo", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pool-bench-") as tmp:
        tmp = Path(tmp)
        repo = exported_repo(args.model_repo, tmp)
        clip = tmp / "clip.mp4"
        write_clip(clip, args.frames / 25)
        results = {}
        one = serve(repo, 2)
        try:
            line = run(clip, [one.grpc_url], tmp / "one.jsonl", args.in_flight)
            results["1 server x 2 threads"] = line
        finally:
            one.stop()
            one.cleanup()
        two = [serve(repo, 1), serve(repo, 1)]
        try:
            line = run(clip, [s.grpc_url for s in two], tmp / "two.jsonl", args.in_flight)
            results["2 servers x 1 thread"] = line
        finally:
            for s in two:
                s.stop()
                s.cleanup()
    fps = {name: float(FPS.search(line).group(1)) for name, line in results.items()}
    print("\n| layout | fps | frames per server |\n|---|---|---|")
    for name, line in results.items():
        taken = SERVERS.search(line)
        print(f"| {name} | {fps[name]:.2f} | {taken.group(1) + '; moved ' + taken.group(2) if taken else 'one server'} |")
    a, b = fps["1 server x 2 threads"], fps["2 servers x 1 thread"]
    print(f"\n2 servers / 1 server: {b / a:.2f}x (the same 2 cores either way)")
    for line in results.values():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
