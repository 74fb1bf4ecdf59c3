"""The live window (OpenCV highgui): shows RGB frames; `q`, Esc or closing the window ends it.

`Window` only shows. `FileWindowSink` is the sink a file run uses with --show: it plays
frames no faster than their timestamps (the file's own pace) and draws a small HUD.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional

import numpy as np

from .errors import SinkError
from .frames import Detections, Frame, to_bgr
from .render import draw_hud

QUIT_KEYS = (ord("q"), ord("Q"), 27)  # 27: Esc


class UserQuit(Exception):
    """The user closed the window (q, Esc, or the window's close button)."""


class Window:
    def __init__(self, title: str = "streamer"):
        self.title = title
        self._open = False
        self._shown = 0

    @staticmethod
    def check_display() -> None:
        """Fail early, with the fix, where no window can open."""
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise SinkError("--show needs a display, and DISPLAY is not set: use --out to record instead, "
                            "or run under a virtual display (xvfb-run streamer run ...)")

    def __enter__(self) -> "Window":
        self.check_display()
        import cv2

        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
        except cv2.error as err:
            raise SinkError(f"cannot open a window ({' '.join(str(err).split())[:200]}); "
                            "opencv-python-headless has no GUI: install opencv-python") from err
        self._open = True
        return self

    def show(self, image: np.ndarray) -> bool:
        """Show one RGB frame. False when the user asked to close the window."""
        import cv2

        if self._shown == 0:
            cv2.resizeWindow(self.title, image.shape[1], image.shape[0])
        cv2.imshow(self.title, to_bgr(image))
        self._shown += 1
        key = cv2.waitKey(1)
        if key != -1 and (key & 0xFF) in QUIT_KEYS:
            return False
        return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        if self._open:
            import cv2

            self._open = False
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:  # the user already closed it
                pass

    def __exit__(self, *exc) -> None:
        self.close()


class FileWindowSink:
    """--show for a file: every frame, at most at the file's own pace, with a small HUD."""

    def __init__(self, window: Window, total: Optional[int] = None):
        self.window = window
        self.total = total
        self._start: Optional[float] = None  # wall time of the first frame's timestamp
        self._first_time: Optional[float] = None
        self._shown = 0
        self._window_start = time.monotonic()

    def write(self, frame: Frame, image: np.ndarray, detections: Optional[Detections]) -> None:
        now = time.monotonic()
        if frame.time is not None:
            if self._start is None:
                self._start, self._first_time = now, frame.time
            due = self._start + (frame.time - self._first_time)
            if due > now:
                time.sleep(due - now)
        self._shown += 1
        elapsed = time.monotonic() - self._window_start
        fps = self._shown / elapsed if elapsed > 0 else 0.0
        position = f"frame {frame.index + 1}" + (f"/{self.total}" if self.total else "")
        status = "no detections (inference failed)" if detections is None else f"{len(detections)} detection(s)"
        if not self.window.show(draw_hud(image, [position, f"display {fps:.1f} fps", status])):
            raise UserQuit()
