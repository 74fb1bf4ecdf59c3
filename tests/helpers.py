"""Test helpers: synthetic clips whose frames carry their own index, read-back, processes.

The index code is a row of large black/white cells (one bit each) across the top of
the frame: big enough to survive H.264, read back by thresholding cell centres.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import List, Optional, Sequence

import av
import numpy as np

CODE_BITS = 9  # up to 511 frames
CELL = 20  # pixels per code cell (square)


def code_width() -> int:
    return CODE_BITS * CELL


def frame_image(index: int, width: int = 200, height: int = 150) -> np.ndarray:
    """An RGB frame: a moving gradient with a bright square, and the index code on top."""
    assert width >= code_width() and height >= CELL * 2
    y, x = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (x * 255 // max(1, width - 1) + index * 7) % 256
    img[..., 1] = (y * 255 // max(1, height - 1)) % 256
    img[..., 2] = (index * 37) % 256
    s = min(width, height) // 4
    cx = CELL + (index * 5) % max(1, width - s - CELL)
    img[CELL + 4:CELL + 4 + s, cx:cx + s] = (250, 250, 250)
    for bit in range(CODE_BITS):
        on = (index >> bit) & 1
        img[0:CELL, bit * CELL:(bit + 1) * CELL] = 255 if on else 0
    return img


def read_code(image: np.ndarray) -> int:
    value = 0
    for bit in range(CODE_BITS):
        cy, cx = CELL // 2, bit * CELL + CELL // 2
        patch = image[cy - 3:cy + 4, cx - 3:cx + 4].astype(np.float32)
        if patch.mean() > 127:
            value |= 1 << bit
    return value


def write_clip(
    path: Path,
    count: int,
    width: int = 200,
    height: int = 150,
    rate: Fraction = Fraction(30000, 1001),
    pts: Optional[Sequence[int]] = None,
    time_base: Optional[Fraction] = None,
    faststart: bool = True,
    image_fn=frame_image,
    options: Optional[dict] = None,
) -> Path:
    """An H.264 mp4 of `count` index-coded frames. `pts` (in `time_base`) makes it VFR; `options`:
    more libx264 options (e.g. {"crf": "30", "g": "25"}: coarser, a keyframe every 25 frames)."""
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
        tb = time_base or 1 / rate
        stream.time_base = tb
        stream.codec_context.time_base = tb
        stream.options = {"crf": "18", "preset": "ultrafast", **(options or {})}
        for i in range(count):
            img = image_fn(i, width, height)
            if width % 2 or height % 2:
                img = np.pad(img, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = pts[i] if pts is not None else i
            frame.time_base = tb
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@dataclass
class VideoReadback:
    codec: str
    pix_fmt: str
    width: int
    height: int
    time_base: Fraction
    average_rate: Optional[Fraction]
    pts: List[int]
    images: List[np.ndarray]
    duration: Optional[float]

    @property
    def codes(self) -> List[int]:
        return [read_code(img) for img in self.images]

    @property
    def times(self) -> List[float]:
        return [float((p - self.pts[0]) * self.time_base) for p in self.pts]


def read_video(path: Path) -> VideoReadback:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        duration = float(stream.duration * stream.time_base) if stream.duration else None
        return VideoReadback(
            codec=stream.codec_context.name,
            pix_fmt=stream.codec_context.pix_fmt,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            time_base=Fraction(stream.time_base),
            average_rate=Fraction(stream.average_rate) if stream.average_rate else None,
            pts=[f.pts for f in frames],
            images=[f.to_ndarray(format="rgb24") for f in frames],
            duration=duration,
        )


def moov_before_mdat(path: Path) -> bool:
    """True when the mp4's top-level moov box comes before mdat (+faststart)."""
    order = []
    with open(path, "rb") as f:
        while True:
            header = f.read(8)
            if len(header) < 8:
                break
            size = int.from_bytes(header[:4], "big")
            kind = header[4:8].decode("latin-1")
            if size == 1:
                size = int.from_bytes(f.read(8), "big") - 8
            order.append(kind)
            if size < 8:
                break
            f.seek(size - 8, os.SEEK_CUR)
    return "moov" in order and "mdat" in order and order.index("moov") < order.index("mdat")


def read_jsonl(path: Path) -> List[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# -- processes -----------------------------------------------------------------------------

STREAMER = [sys.executable, "-m", "streamer"]


def streamer(*args: str, timeout: float = 300, env: Optional[dict] = None, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `streamer` command; returns the completed process (text output)."""
    return subprocess.run(
        STREAMER + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, env=env, **kwargs,
    )


def start_streamer(*args: str, env: Optional[dict] = None, **popen) -> subprocess.Popen:
    """`popen`: more subprocess.Popen arguments (preexec_fn: limits for the child)."""
    return subprocess.Popen(
        STREAMER + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL, env=env, **popen,
    )


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.loads(resp.read())


def inference_count(http_url: str, model: Optional[str] = None) -> int:
    """Frames the server has inferred for the model, or for all its models (0 when unreachable).
    The warm-up requests Triton runs at load (`model_warmup`) are counted by its statistics too:
    they are left out here, so a count means frames sent by clients."""
    path = f"/v2/models/{model}/stats" if model else "/v2/models/stats"
    try:
        stats = _get_json(f"{http_url}{path}")
        total = 0
        for s in stats["model_stats"]:
            count = s["inference_stats"]["success"]["count"]
            if count:
                config = _get_json(f"{http_url}/v2/models/{s['name']}/config")
                count -= sum(int(w.get("count", 1) or 1) * int(w.get("batch_size", 1) or 1)
                             for w in config.get("model_warmup", []))
            total += max(0, count)
        return total
    except OSError:
        return 0


def wait_until(predicate, timeout: float, interval: float = 0.1, what="condition") -> None:
    """Poll `predicate` until it holds or `timeout` s pass; `what` (text, or a function giving it
    when the wait failed) names what was waited for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what() if callable(what) else what}")


def children(pid: int) -> List[int]:
    """PIDs whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def process_name(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- shared-memory regions ------------------------------------------------------------------------

def region_files(pid: int) -> List[Path]:
    """/dev/shm regions owned by process `pid` (streamer-shm-<ns>-<pid>-<start>-<n>)."""
    return sorted(p for p in Path("/dev/shm").glob("streamer-shm-*") if p.name.split("-")[3] == str(pid))


def registered(url: str) -> List[str]:
    """Names of the system shared-memory regions the server at gRPC `url` has registered."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        return sorted(client.get_system_shared_memory_status(client_timeout=10).regions)
    finally:
        client.close()


def owned_by(names, pid: int) -> List[str]:
    return [n for n in names if n.startswith("streamer-shm-") and n.split("-")[3] == str(pid)]


def recorded_in_order(name: str, count: dict, recorded: list, wrap: int = 1 << 30) -> None:
    """A live recording holds every shown frame, in order; a frame missing from it is one the run
    counted as dropped for display (a main thread starved for over a second on a loaded 2-core box
    drops the oldest queued frames, and says so), never one lost silently. Frames dropped before
    the first recorded one are among the codes before it (the camera's stream may also start a
    frame or two in). `count`: the stream's frame counts (report); codes count modulo `wrap`."""
    assert len(recorded) == count["shown"], (name, count)
    gaps = sum((b - a - 1) % wrap for a, b in zip(recorded, recorded[1:]))
    assert gaps <= count["dropped"] and count["dropped"] - gaps <= recorded[0], (name, count, recorded)
    assert count["captured"] >= count["shown"] + count["dropped"], (name, count)


def kill_server(server) -> None:
    """SIGKILL the server's process group (tritonserver and its model stubs), by PID."""
    pid = server.proc.pid
    os.killpg(pid, signal.SIGKILL)
    server.proc.wait(10)
