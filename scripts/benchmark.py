"""Speed of each model on this machine: end-to-end fps vs. the server's own time per frame.

Models: for each configuration, export (random weights unless --weights), run `streamer
run` on the sample with the embedded Triton server, writing the annotated mp4, and read
its accounting line.

Transport (--transport): one server (mobilenet_320 exported once: the seed `fasterrcnn` and
the uint8 `fasterrcnn_u8`), clips of 640x480, 1280x720, 1920x1080 and 1440x1080 made here from the
sample, and end-to-end fps for (seed model, gRPC), (uint8 model, gRPC), (uint8 model, shm)
with `--detections` only, then with `--out` too (what H.264 encoding costs), beside a
seed-style client (one blocking HTTP FP32 request per frame, nothing written).
Figures belong here and in notes, not in test asserts.

    .venv/bin/python scripts/benchmark.py                  # all model configurations
    .venv/bin/python scripts/benchmark.py --max-frames 12 --only v2-800
    .venv/bin/python scripts/benchmark.py --transport      # the transport table (300 frames a clip)
    .venv/bin/python scripts/benchmark.py --transport --frames 40
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


# 1440x1080 has 640x480's shape: mobilenet_320 resizes both to 427x320, so the two compare the
# cost of moving and decoding bigger frames at equal model work. The 16:9 sizes become 569x320
# (1.3x the model's pixels of a 4:3 frame).
SIZES = ((640, 480), (1280, 720), (1920, 1080), (1440, 1080))
PATHS = {  # name -> `streamer run` flags
    "seed model, gRPC": ["--model", "fasterrcnn", "--transport", "grpc"],
    "uint8 model, gRPC": ["--model", "fasterrcnn_u8", "--transport", "grpc"],
    "uint8 model, shm": ["--model", "fasterrcnn_u8", "--transport", "shm"],
}
SEED_STYLE = "seed-style client (HTTP FP32, blocking)"


def make_clip(path: Path, width: int, height: int, frames: int) -> Path:
    """The sample's frames scaled to width x height, looped to `frames` frames (H.264)."""
    import av
    import cv2

    with av.open(str(SAMPLE)) as src:
        images = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "20"}
        for i in range(frames):
            image = cv2.resize(images[i % len(images)], (width, height), interpolation=cv2.INTER_LINEAR)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def seed_style_fps(clip: Path, http_url: str) -> float:
    """What the seed's client did: OpenCV decode, FP32 CHW, one blocking HTTP request per frame."""
    import cv2
    import numpy as np
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(http_url.split("://", 1)[-1])
    capture = cv2.VideoCapture(str(clip))
    frames, started = 0, time.monotonic()
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        chw = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).transpose(2, 0, 1).astype(np.float32) / 255.0
        tensor = httpclient.InferInput("input__0", list(chw.shape), "FP32")
        tensor.set_data_from_numpy(chw)
        result = client.infer("fasterrcnn", [tensor], outputs=[
            httpclient.InferRequestedOutput(name) for name in ("output__0", "output__1", "output__2")])
        result.as_numpy("output__0")
        frames += 1
    elapsed = time.monotonic() - started
    capture.release()
    client.close()
    return frames / elapsed


def transport_benchmark(args) -> None:
    from streamer.server import start_on_free_ports

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        exported = streamer("export-model", "--repo", repo, "--weights", args.weights,
                            *CONFIGS["mobilenet_320_fpn"])
        if exported.returncode:
            sys.exit(f"export failed: {exported.stderr.strip().splitlines()[-1]}")
        served = {p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file()}
        clips = {size: make_clip(Path(tmp) / f"{size[0]}x{size[1]}.mp4", *size, args.frames) for size in SIZES}
        server = start_on_free_ports(repo, threads=args.threads)
        rows = []  # (path, size, written, fps, server ms)
        try:
            for size, clip in clips.items():
                for name, flags in PATHS.items():
                    if flags[1] not in served:
                        print(f"skipped {name}: the export has no {flags[1]}", flush=True)
                        continue
                    for out in (False, True):
                        run = ["run", clip, "--triton", server.grpc_url, "--detections", Path(tmp) / "d.jsonl",
                               "--overwrite", *flags]
                        if out:
                            run += ["--out", Path(tmp) / "out.mp4"]
                        result = streamer(*run)
                        match = LINE.search(result.stdout)
                        if result.returncode or not match:
                            sys.exit(f"{name} {size}: run failed ({result.returncode}): {result.stderr[-500:]}")
                        label = name + (", --out" if out else "")
                        rows.append((label, size, match["written"], float(match["fps"]), match["server"] or "-"))
                        print(f"{size[0]}x{size[1]} {label}: {match.group(0)}", flush=True)
                fps = seed_style_fps(clip, server.http_url)
                rows.append((SEED_STYLE, size, str(args.frames), fps, "-"))
                print(f"{size[0]}x{size[1]} {SEED_STYLE}: {fps:.2f} fps", flush=True)
        finally:
            server.stop()
            server.cleanup()

    print(f"\nmobilenet_320 ({args.weights} weights), {args.frames} frames a clip, server threads {args.threads}, "
          "in flight 2\n")
    print("| path | " + " | ".join(f"{w}x{h} fps (server ms/frame)" for w, h in SIZES) + " |")
    print("|---|" + "---|" * len(SIZES))
    fps = {(r[0], r[1]): r[3] for r in rows}
    for label in dict.fromkeys(r[0] for r in rows):
        cells = [f"{fps[(label, s)]:.2f} ({next(r[4] for r in rows if r[0] == label and r[1] == s)})"
                 if (label, s) in fps else "-" for s in SIZES]
        print(f"| {label} | " + " | ".join(cells) + " |")
    best = "uint8 model, shm" if ("uint8 model, shm", SIZES[2]) in fps else "seed model, gRPC"
    vga, hd, full_hd, full_43 = (fps.get((best, size)) for size in SIZES)
    seed_big = fps.get((SEED_STYLE, SIZES[2]))
    if full_hd and seed_big:
        print(f"\n{best} at 1080p: {full_hd / seed_big:.2f}x the seed-style client (goal >= 1.5)")
    if full_hd and vga:
        print(f"{best}: 1920x1080 fps / 640x480 fps = {full_hd / vga:.2f} (goal >= 0.9; the model works on "
              "1.3x the pixels for 16:9)")
    if full_43 and vga:
        print(f"{best}: 1440x1080 fps / 640x480 fps = {full_43 / vga:.2f} (equal model work)")
    if full_hd and hd:
        print(f"{best}: 1920x1080 fps / 1280x720 fps = {full_hd / hd:.2f} (equal model work)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", action="store_true",
                        help="the transport table instead of the model configurations (see above)")
    parser.add_argument("--frames", type=int, default=300, help="--transport: frames per clip")
    parser.add_argument("--threads", type=int, default=2, help="--transport: the server's torch threads")
    parser.add_argument("--only", nargs="*", choices=sorted(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--weights", default="random", help="coco, random or a .pth (default: random)")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--in-flight", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--input", type=Path, default=SAMPLE)
    args = parser.parse_args()
    if args.transport:
        transport_benchmark(args)
        return

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
