"""What `--infer-every N` buys a file run (issue 16): fps of `streamer run` with every Nth frame
inferred against every frame inferred, through the real pipeline and a real Triton.

The model is the demo's (`make demo WEIGHTS=random`: v2 exported with --min-size 480 --max-size 640
--proposals 300 --weights random), the clip a 640x480 one without cuts (sprites moving over a grey
texture, tests/sprites.py), so the schedule infers frames 0, N, 2N, ... and the last. The runs
alternate (every frame, every Nth, every frame, ...) on one server, so both see the same machine;
each writes --out like a user's run. The goal in the issue: fps ratio >= 3.5 at N = 5.

    PYTHONPATH=$PWD .venv/bin/python scripts/track_run_benchmark.py
    PYTHONPATH=$PWD .venv/bin/python scripts/track_run_benchmark.py --repo model_repository --repeat 2
    PYTHONPATH=$PWD .venv/bin/python scripts/track_run_benchmark.py --triton 127.0.0.1:8001 --frames 120

Without --repo it exports the demo model into a temporary folder first (a minute or two); without
--triton it starts the embedded server on free loopback ports and stops it at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer import contract  # noqa: E402

DEMO_EXPORT = ("--weights", "random", "--min-size", "480", "--max-size", "640", "--proposals", "300")
STREAMER = [sys.executable, "-m", "streamer"]


def streamer(*args) -> subprocess.CompletedProcess:
    return subprocess.run(STREAMER + [str(a) for a in args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, cwd=ROOT)


def demo_repo(repo: Path) -> Path:
    if (repo / contract.MODEL_NAME / "1" / contract.MODEL_FILENAME).is_file():
        return repo
    print(f"exporting the demo model to {repo} ...", flush=True)
    result = streamer("export-model", "--repo", repo, *DEMO_EXPORT)
    if result.returncode != 0:
        sys.exit(f"export failed: {result.stderr.strip()}")
    print(result.stdout.strip().splitlines()[-1], flush=True)
    return repo


def make_clip(path: Path, frames: int) -> Path:
    from tests import sprites

    scene = sprites.crossing(frames)  # 640x480, two sprites crossing on a still background: no cut
    sprites.write_scene(path, scene)
    return path


def one_run(clip: Path, triton: str, every: int, work: Path, n: int) -> Dict[str, float]:
    summary, out = work / f"every{every}_{n}.json", work / f"every{every}_{n}.mp4"
    started = time.monotonic()
    result = streamer("run", clip, "--triton", triton, "--infer-every", every, "--out", out, "--summary", summary,
                      "--overwrite")
    wall = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"streamer run --infer-every {every} failed ({result.returncode}): {result.stderr.strip()}")
    stream = json.loads(summary.read_text())["streams"][0]
    frames = stream["frames"]
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("frames:")), "")
    print(f"  --infer-every {every}: {line}", flush=True)
    return {"fps": stream["fps"], "wall": wall, "inferred": frames["inferred"], "tracked": frames["tracked"],
            "written": frames["written"], "latency_p50": (stream.get("latency_ms") or {}).get("p50") or 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, help="a repository holding the demo export (default: export one)")
    parser.add_argument("--triton", help="use this server (HOST:PORT) instead of starting the embedded one")
    parser.add_argument("--threads", type=int, default=0, help="the embedded server's torch threads (0: all cores)")
    parser.add_argument("--frames", type=int, default=60, help="frames in the clip")
    parser.add_argument("--every", type=int, default=5, help="N of --infer-every")
    parser.add_argument("--repeat", type=int, default=1, help="pairs of runs (the median is reported)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="track-run-bench-") as tmp:
        work = Path(tmp)
        clip = make_clip(work / "clip.mp4", args.frames)
        server = None
        triton = args.triton
        if triton is None:
            from streamer.server import start_on_free_ports

            repo = demo_repo(args.repo or work / "repo")
            print("starting the embedded server ...", flush=True)
            server = start_on_free_ports(repo, threads=args.threads, startup_timeout=600)
            triton = server.grpc_url
        try:
            results: Dict[int, List[Dict[str, float]]] = {1: [], args.every: []}
            for n in range(args.repeat):
                for every in (1, args.every):
                    results[every].append(one_run(clip, triton, every, work, n))
        finally:
            if server is not None:
                server.stop()
                server.cleanup()

    print(f"\n{args.frames}-frame 640x480 clip without cuts, demo model, {args.repeat} pair(s) of runs (median):")
    print(f"  {'mode':18} {'inferred':>8} {'tracked':>7} {'fps':>7} {'run s':>7} {'latency p50':>11}")
    fps = {}
    for every, rows in results.items():
        fps[every] = statistics.median(r["fps"] for r in rows)
        wall = statistics.median(r["wall"] for r in rows)
        latency = statistics.median(r["latency_p50"] for r in rows)
        row = rows[0]
        print(f"  {'--infer-every ' + str(every):18} {row['inferred']:8d} {row['tracked']:7d} {fps[every]:7.2f} "
              f"{wall:7.1f} {latency:9.0f} ms")
    ratio = fps[args.every] / fps[1] if fps[1] else float("nan")
    pairs = [b["fps"] / a["fps"] for a, b in zip(results[1], results[args.every]) if a["fps"]]
    print(f"  fps ratio --infer-every {args.every} / --infer-every 1: {ratio:.2f} "
          f"(per pair: {', '.join(f'{p:.2f}' for p in pairs)}; goal >= 3.5 at N = 5)")


if __name__ == "__main__":
    main()
