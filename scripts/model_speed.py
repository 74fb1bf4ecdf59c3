"""Model speed before/after the export's optimisation, per arch, at equal outputs.

    .venv/bin/python scripts/model_speed.py                       # v2 at 480/640, both MobileNets
    .venv/bin/python scripts/model_speed.py --rounds 20 --arch fasterrcnn_mobilenet_v3_large_320_fpn
    .venv/bin/python scripts/model_speed.py --size 1920x1080      # the sample scaled to 1080p

For each arch (random weights, seed 0) it saves the seed model's wrapper as TorchScript in
several forms, loads each back with torch.jit.load (what Triton does), checks each against the
seed's form on real frames (same count and labels, boxes within 0.5 px, scores within 1e-3) and
times them on one frame in alternating rounds in this one process, so that a loaded machine
slows them alike. It prints per-call medians of wall time and of this process's CPU time (less
sensitive to other processes on the machine) and the ratios to the seed's form.

Forms: seed (torch.jit.script of the wrapper around torchvision's model as it is: the seed's
export), plain (the same with the transform resizing before it normalizes:
export.ResizeFirstTransform), frozen (that, torch.jit.freeze, optimize_numerics=False),
frozen_numerics (optimize_numerics=True), frozen_channels_last (the model in channels-last
memory format, then frozen). export-model ships frozen_channels_last for every arch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {
    "fasterrcnn_resnet50_fpn_v2": dict(min_size=480, max_size=640, proposals=300),
    # Untrained, it scores every class about 1/91: a zero floor gives it boxes to compare.
    "fasterrcnn_mobilenet_v3_large_320_fpn": dict(box_score_thresh=0.0),
    "fasterrcnn_mobilenet_v3_large_fpn": dict(box_score_thresh=0.0),
}


def frames(path: Path, count: int = 4, size=None):
    import av

    with av.open(str(path)) as container:
        decoded = [(f.reformat(*size) if size else f).to_ndarray(format="rgb24") for f in container.decode(video=0)]
    step = max(1, len(decoded) // count)
    return [np.ascontiguousarray(decoded[i]) for i in range(0, step * count, step)][:count]


def variants(arch: str, settings: dict):
    import torch

    from streamer.export import DetectorWrapper, ExportSettings, build_model, freeze, script

    def model(channels_last: bool = False):
        m, _, _ = build_model(ExportSettings(arch=arch, weights="random", **settings))
        return m.to(memory_format=torch.channels_last) if channels_last else m

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            # The seed's export: torchvision's own transform (normalize the whole frame, then resize).
            "seed": torch.jit.script(DetectorWrapper(model()).eval()),
            "plain": script(model()),
            "frozen": freeze(script(model())),
            "frozen_numerics": torch.jit.freeze(script(model()).eval(), optimize_numerics=True),
            "frozen_channels_last": freeze(script(model(channels_last=True))),
        }


def same(a, b) -> str:
    """Same detections, in any order among equal scores (an untrained model at a zero floor gives
    many detections the very same score; float rounding may order those differently)."""
    if len(a[2]) != len(b[2]):
        return f"count {len(a[2])} vs {len(b[2])}"
    unused = set(range(len(b[2])))
    box = score = 0.0
    for i in range(len(a[2])):
        candidates = [j for j in unused if b[1][j] == a[1][i] and abs(b[2][j] - a[2][i]) <= 1e-3]
        if not candidates:
            return f"DIFFERENT (detection {i}: no match of its label and score)"
        j = min(candidates, key=lambda j: float(np.abs(b[0][j] - a[0][i]).max()))
        unused.discard(j)
        box = max(box, float(np.abs(b[0][j] - a[0][i]).max()))
        score = max(score, float(abs(b[2][j] - a[2][i])))
    ok = box <= 0.5 and score <= 1e-3
    return f"{'equal' if ok else 'DIFFERENT'} (max box {box:.4f} px, score {score:.1e})"


def run(arch: str, settings: dict, images, rounds: int, threads: int, work: Path) -> None:
    import torch

    from streamer.triton import to_input

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    loaded = {}
    for name, module in variants(arch, settings).items():
        path = work / f"{arch}-{name}.pt"
        module.save(str(path))
        loaded[name] = torch.jit.load(str(path), map_location="cpu").eval()
    inputs = [torch.from_numpy(to_input(i)) for i in images]
    wall = {k: [] for k in loaded}
    cpu = {k: [] for k in loaded}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = [[t.numpy() for t in loaded["seed"](x)] for x in inputs]
        for name, module in loaded.items():
            checks = [same([t.numpy() for t in module(x)], ref) for x, ref in zip(inputs, reference)]
            counts = [len(r[2]) for r in reference]
            print(f"{arch} {name:22s} outputs vs seed on {len(inputs)} frames ({counts} detections): "
                  f"{'; '.join(sorted(set(checks)))}", flush=True)
            for _ in range(3):  # the profiling executor's first runs
                module(inputs[0])
        for _ in range(rounds):
            for name, module in loaded.items():
                w, c = time.perf_counter(), time.process_time()
                module(inputs[0])
                wall[name].append(time.perf_counter() - w)
                cpu[name].append(time.process_time() - c)
    base_w, base_c = statistics.median(wall["seed"]), statistics.median(cpu["seed"])
    for name in loaded:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{arch} {name:22s} wall {w * 1000:8.1f} ms (x{base_w / w:.2f})   cpu {c * 1000:8.1f} ms "
              f"(x{base_c / c:.2f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", action="append", choices=sorted(CONFIGS), help="default: all")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clip", type=Path, default=ROOT / "samples" / "sample.mp4")
    parser.add_argument("--size", default=None, metavar="WxH", help="scale the clip's frames to this size first")
    args = parser.parse_args()
    images = frames(args.clip, size=tuple(int(v) for v in args.size.split("x")) if args.size else None)
    print(f"{len(images)} frames {images[0].shape[1]}x{images[0].shape[0]}, {args.threads} threads, "
          f"{args.rounds} alternating rounds", flush=True)
    with tempfile.TemporaryDirectory(prefix="model-speed-") as work:
        for arch in args.arch or CONFIGS:
            run(arch, CONFIGS[arch], images, args.rounds, args.threads, Path(work))


if __name__ == "__main__":
    main()
