"""The live window (OpenCV highgui): shows RGB frames; `q`, Esc or closing the window ends it.

`Window` only shows. `WindowDisplay` is the `Display` runs use with --show: one camera with its
HUD (a file played no faster than its timestamps), or a mosaic of several cameras.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional, Sequence, Tuple

import numpy as np

from .errors import SinkError
from .frames import to_bgr
from .render import draw_hud
from .stages import View

QUIT_KEYS = (ord("q"), ord("Q"), 27)  # 27: Esc


class Window:
    def __init__(self, title: str = "streamer"):
        self.title = title
        self._open = False
        self._shown = 0
        self._size: Optional[Tuple[int, int]] = None

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

        size = (image.shape[1], image.shape[0])
        if size != self._size:  # the first picture, or a new size (the camera's first frame after the
            cv2.resizeWindow(self.title, *size)  # "connecting" tile): the window takes it; the user may resize
            self._size = size
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


class WindowDisplay:
    """The OpenCV window as a `Display`: one camera with its HUD, or a mosaic of every camera.

    paced: a file run's window plays frames no faster than their timestamps (the file's own pace).
    The mosaic is redrawn at most `mosaic_fps` times a second, at most `mosaic_size`."""

    def __init__(self, title: str, paced: bool = False, mosaic_fps: float = 15.0,
                 mosaic_size: Tuple[int, int] = (1280, 720)):
        self.window = Window(title)
        self.paced = paced
        self.mosaic_fps = mosaic_fps
        self.mosaic_size = mosaic_size
        self._start: Optional[float] = None  # wall time of the first frame's timestamp
        self._first_time: Optional[float] = None
        self._mosaic_shown = 0.0

    def __enter__(self) -> "WindowDisplay":
        self.window.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.window.close()

    def _pace(self, frame) -> None:
        if frame is None or frame.time is None:
            return
        now = time.monotonic()
        if self._start is None:
            self._start, self._first_time = now, frame.time
        due = self._start + (frame.time - self._first_time)
        if due > now:
            time.sleep(due - now)

    def show(self, views: Sequence[View]) -> bool:
        if len(views) == 1:
            view = views[0]
            if view.image is None:  # a camera not up yet: its name and state (a file: its first frame comes)
                return True if self.paced else self._show_waiting(view)
            if self.paced:
                self._pace(view.frame)
            return self.window.show(draw_hud(view.image, list(view.hud), view.banner))
        from .mosaic import compose, tile_size_to_fit

        if not self._redraw_due():
            return True
        tiles = [(v.image, v.name, list(v.hud), v.banner) for v in views]
        return self.window.show(compose(tiles, tile_size_to_fit(len(tiles), self.mosaic_size)))

    def _redraw_due(self) -> bool:
        """A composed picture (the mosaic, a waiting tile) is drawn at most `mosaic_fps` times a second."""
        now = time.monotonic()
        if now - self._mosaic_shown < 1 / self.mosaic_fps:
            return False
        self._mosaic_shown = now
        return True

    def _show_waiting(self, view: View) -> bool:
        """One camera before its first frame (connecting, or not reachable yet): a tile that says so."""
        from .mosaic import render_tile

        if not self._redraw_due():
            return True
        return self.window.show(render_tile((None, view.name, list(view.hud), view.banner)))
