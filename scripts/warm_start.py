"""First inference on a freshly started embedded server against the steady per-frame latency,
for both models, with the configs' model_warmup and (for comparison) without it.

    .venv/bin/python scripts/warm_start.py                      # exports mobilenet_320 (random weights)
    .venv/bin/python scripts/warm_start.py --repo model_repository --frames 8

Prints one line per (model, warm-up) pair: the first request's latency, the median of the next
ones, and their ratio, in wall time and in the CPU time the server's processes spent on each
request (from /proc: less sensitive to other work on a shared machine). Compare ratios of the
same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamer import contract  # noqa: E402
from streamer.server import start_on_free_ports  # noqa: E402


def frame(path: Path) -> np.ndarray:
    from streamer.doctor import first_frame

    return first_frame(path)


def request(name: str, image: np.ndarray):
    import tritonclient.grpc as grpcclient

    from streamer.triton import to_input

    served = contract.contract_for(name)
    data = to_input(image) if served is contract.SEED else image[None]
    tensor = grpcclient.InferInput(served.input.name, list(data.shape), served.input.datatype)
    tensor.set_data_from_numpy(np.ascontiguousarray(data))
    return [tensor]


def server_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process `pid` and its descendants (the backend stubs)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents, total = {}, 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    family = {pid}
    changed = True
    while changed:
        changed = False
        for child, (parent, _) in parents.items():
            if parent in family and child not in family:
                family.add(child)
                changed = True
    for member in family:
        total += parents.get(member, (0, 0.0))[1]
    return total


def without_warmup(repo: Path, into: Path) -> Path:
    """A copy of `repo` (model.pt linked) whose configs have no model_warmup."""
    from google.protobuf import text_format

    for served in contract.CONTRACTS:
        src = repo / served.name
        if not (src / contract.CONFIG_FILENAME).is_file():
            continue
        (into / served.name / "1").mkdir(parents=True)
        (into / served.name / "1" / contract.MODEL_FILENAME).symlink_to((src / "1" / contract.MODEL_FILENAME).resolve())
        config = contract.read_config(src / contract.CONFIG_FILENAME)
        del config.model_warmup[:]
        (into / served.name / contract.CONFIG_FILENAME).write_text(text_format.MessageToString(config))
    return into


def measure(repo: Path, image: np.ndarray, frames: int, threads: int, label: str) -> None:
    import tritonclient.grpc as grpcclient

    started = time.monotonic()
    server = start_on_free_ports(repo, threads=threads)
    ready = time.monotonic() - started
    try:
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            for served in contract.CONTRACTS:
                times, cpu = [], []
                for _ in range(frames):
                    t, c = time.perf_counter(), server_cpu_seconds(server.proc.pid)
                    client.infer(served.name, request(served.name, image), client_timeout=600)
                    times.append((time.perf_counter() - t) * 1000)
                    cpu.append((server_cpu_seconds(server.proc.pid) - c) * 1000)
                steady, steady_cpu = statistics.median(times[1:]), statistics.median(cpu[1:])
                print(f"{label:12s} {served.name:14s} ready in {ready:5.1f} s | wall: first {times[0]:6.0f} ms, "
                      f"second {times[1]:6.0f} ms, steady {steady:6.0f} ms, first/steady x{times[0] / steady:.2f} | "
                      f"server cpu: first {cpu[0]:6.0f} ms, second {cpu[1]:6.0f} ms, steady {steady_cpu:6.0f} ms, "
                      f"first/steady x{cpu[0] / steady_cpu:.2f}", flush=True)
    finally:
        server.stop()
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, help="an exported repository (default: export mobilenet_320, random)")
    parser.add_argument("--image", type=Path, default=ROOT / "samples" / "sample.mp4")
    parser.add_argument("--frames", type=int, default=8, help="requests per model (the first one is the cold one)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--starts", type=int, default=1, help="fresh server starts per variant")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="warm-start-"))
    try:
        repo = args.repo
        if repo is None:
            import subprocess

            repo = work / "repo"
            subprocess.run([sys.executable, "-m", "streamer", "export-model", "--repo", str(repo), "--weights", "random",
                            "--arch", "fasterrcnn_mobilenet_v3_large_320_fpn"], check=True, cwd=ROOT)
        image = frame(args.image)
        print(f"frame {image.shape[1]}x{image.shape[0]}, {args.threads} threads, {args.frames} requests per model")
        cold = without_warmup(repo, work / "cold")
        for _ in range(args.starts):
            measure(repo, image, args.frames, args.threads, "model_warmup")
            measure(cold, image, args.frames, args.threads, "no warm-up")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
