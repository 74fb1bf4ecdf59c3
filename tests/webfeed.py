"""A small fake run for the web display's tests: cameras as a thread calling `show(views)`.

Each camera's frames carry two codes as black/white cells (width / 32 pixels square): the frame
index along the bottom edge and the capture wall-clock time (milliseconds, modulo 2**32) in a
row two cells from the top, so a
test reads both back from a JPEG, an MJPEG part or a browser canvas. No Triton, no capture.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from streamer.frames import Detections, Frame
from streamer.stages import View
from streamer.states import ViewState

INDEX_BITS = 12
TIME_BITS = 32
TIME_ROW_CELLS = 2  # the time code's top edge, in cells (cells scale with the picture: tiles read the same)


def cell_size(width: int) -> int:
    return max(8, width // TIME_BITS)


def put_bits(image: np.ndarray, value: int, bits: int, top: int, cell: int) -> None:
    for bit in range(bits):
        image[top:top + cell, bit * cell:(bit + 1) * cell] = 255 if (value >> bit) & 1 else 0


def read_bits(image: np.ndarray, bits: int, top: int, cell: int) -> Optional[int]:
    """The code whose cells start at row `top`; None when a cell is neither clearly black nor white."""
    value = 0
    for bit in range(bits):
        cy, cx = top + cell // 2, bit * cell + cell // 2
        r = max(1, cell // 4)
        level = float(image[cy - r:cy + r + 1, cx - r:cx + r + 1].mean())
        if 70 < level < 185:
            return None
        if level >= 185:
            value |= 1 << bit
    return value


@functools.lru_cache(maxsize=8)
def _gradient(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = x * 255 // max(1, width - 1)
    img[..., 1] = y * 255 // max(1, height - 1)
    img.setflags(write=False)
    return img


def coded_image(index: int, wall_ms: int, width: int = 320, height: int = 240) -> np.ndarray:
    """An RGB frame: a gradient whose blue changes with the index, the index code along the
    bottom edge, the wall-clock code two cells from the top (a copy of a cached gradient: cheap
    enough for several 720p cameras at 25 fps)."""
    cell = cell_size(width)
    img = _gradient(width, height).copy()
    img[..., 2] = (index * 37) % 256
    put_bits(img, wall_ms % (1 << TIME_BITS), TIME_BITS, TIME_ROW_CELLS * cell, cell)
    put_bits(img, index % (1 << INDEX_BITS), INDEX_BITS, height - cell, cell)
    return img


def read_index(image: np.ndarray) -> Optional[int]:
    cell = cell_size(image.shape[1])
    return read_bits(image, INDEX_BITS, image.shape[0] - cell, cell)


def read_wall_ms(image: np.ndarray) -> Optional[int]:
    cell = cell_size(image.shape[1])
    return read_bits(image, TIME_BITS, TIME_ROW_CELLS * cell, cell)


def now_ms() -> int:
    return int(time.time() * 1000) % (1 << TIME_BITS)


@dataclass
class FakeCamera:
    name: str
    width: int = 320
    height: int = 240
    state: ViewState = ViewState.UP
    banner: Optional[str] = None
    index: int = -1
    image: Optional[np.ndarray] = None
    frame: Optional[Frame] = None
    outputs: Tuple[str, ...] = ()
    fresh: bool = False


class FakeRun:
    """Cameras at `fps`, shown on `display` from a thread (as the run's main thread would).

    `offline(name, reason)` stops a camera's frames and shows OFFLINE with the reason;
    `online(name)` brings it back; `end()` marks every camera ENDED. `detections` adds two boxes
    per frame, with track ids."""

    def __init__(self, display, names: Sequence[str], fps: float = 10.0, width: int = 320, height: int = 240,
                 outputs: Optional[Dict[str, Sequence[str]]] = None, never_up: Sequence[str] = ()):
        self.display = display
        self.fps = fps
        self.cameras: List[FakeCamera] = [
            FakeCamera(n, width, height, outputs=tuple((outputs or {}).get(n, ()))) for n in names]
        for cam in self.cameras:
            if cam.name in never_up:
                cam.state, cam.banner = ViewState.OFFLINE, "OFFLINE: cannot connect to rtsp://***@camera.invalid/x"
        self.shows = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-run", daemon=True)

    def __enter__(self) -> "FakeRun":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def camera(self, name: str) -> FakeCamera:
        return next(c for c in self.cameras if c.name == name)

    def offline(self, name: str, reason: str) -> None:
        with self._lock:
            cam = self.camera(name)
            cam.state, cam.banner = ViewState.OFFLINE, reason

    def online(self, name: str) -> None:
        with self._lock:
            cam = self.camera(name)
            cam.state, cam.banner = ViewState.UP, None

    def end(self) -> None:
        with self._lock:
            for cam in self.cameras:
                cam.state, cam.banner = ViewState.ENDED, "ENDED"

    def _views(self) -> List[View]:
        views = []
        now = time.monotonic()
        with self._lock:
            for cam in self.cameras:
                cam.fresh = False
                if cam.state is ViewState.UP:
                    cam.index += 1
                    cam.image = coded_image(cam.index, now_ms(), cam.width, cam.height)
                    cam.frame = Frame(cam.index, None, None, now, cam.image)
                    cam.fresh = True
                found = Detections(np.array([[10, 10, 60, 60], [80, 40, 150, 120]], np.float32),
                                   np.array([1, 3]), np.array([0.9, 0.7], np.float32),
                                   track_ids=np.array([7, -1]))
                figures = {"display_fps": self.fps, "source_fps": self.fps, "detections_per_s": 2.5,
                           "frame_age_s": 0.01, "detection_age_s": 0.4, "skipped": 0, "reconnects": 0}
                hud = (f"{cam.name}: display {self.fps:.1f} fps", f"frame {max(cam.index, 0)}")
                views.append(View(cam.name, cam.image, cam.state, hud, cam.banner, cam.frame, cam.fresh, figures,
                                  found if cam.image is not None else None, cam.outputs))
        return views

    def _run(self) -> None:
        period = 1.0 / self.fps
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.display.show(self._views())
            self.shows += 1
            next_at += period
            self._stop.wait(max(0.0, next_at - time.monotonic()))
