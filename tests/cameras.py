"""Real live parts for tests: an RTSP camera on 127.0.0.1, a virtual X display, screenshots.

The camera is scripts/rtsp_camera.py (gst-rtsp-server) under Debian's own python3; the
display is Xvfb. Both are started by the test that uses them and stopped by PID. When a
system package is missing the tests fail with the package to install (`.ci/run`
installs them): they never skip.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import List, Optional

import av
import numpy as np

from streamer.server import free_port

from .helpers import CELL, CODE_BITS, frame_image, start_streamer, wait_until, write_clip

ROOT = Path(__file__).resolve().parent.parent
CAMERA_SCRIPT = ROOT / "scripts" / "rtsp_camera.py"
SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_PACKAGES = "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"


# -- clips whose index code sits at the bottom (the HUD covers the top-left corner) -------------

def bottom_code_image(index: int, width: int = 320, height: int = 240) -> np.ndarray:
    img = frame_image(index, width, height)
    img[0:CELL] = img[CELL:2 * CELL]  # hide the top code: one code per frame
    for bit in range(CODE_BITS):
        img[height - CELL:height, bit * CELL:(bit + 1) * CELL] = 255 if (index >> bit) & 1 else 0
    return img


def read_bottom_code(image: np.ndarray) -> Optional[int]:
    """The index code at the bottom, or None when a cell is not clearly black or white.
    The median of each cell's centre ignores a thin box line drawn across it."""
    value = 0
    h = image.shape[0]
    for bit in range(CODE_BITS):
        cy, cx = h - CELL // 2, bit * CELL + CELL // 2
        level = float(np.median(image[cy - 6:cy + 7, cx - 6:cx + 7].mean(axis=2)))
        if 60 < level < 195:
            return None
        if level >= 195:
            value |= 1 << bit
    return value


def camera_clip(path: Path, count: int, rate: int = 25, width: int = 320, height: int = 240) -> Path:
    return write_clip(path, count, width, height, rate=Fraction(rate), image_fn=bottom_code_image)


# -- the RTSP camera ------------------------------------------------------------------------------

class RtspCamera:
    """`with RtspCamera(clip) as cam: cam.url` -- stop(), start() again on the same port, pause()/resume()."""

    def __init__(self, clip: Path, path: str = "/cam", user: Optional[str] = None, password: Optional[str] = None,
                 log: Optional[Path] = None):
        self.clip = clip
        self.path = path
        self.user = user
        self.password = password
        self.log = log  # the server appends a line per client connection (the test owns the file)
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        auth = f"{self.user}:{self.password}@" if self.user else ""
        return f"rtsp://{auth}127.0.0.1:{self.port}{self.path}"

    def start(self, timeout: float = 20) -> "RtspCamera":
        if not Path(SYSTEM_PYTHON).exists():
            raise AssertionError(f"{SYSTEM_PYTHON} missing: apt-get install python3 {RTSP_PACKAGES} (.ci/run does)")
        cmd = [SYSTEM_PYTHON, str(CAMERA_SCRIPT), str(self.clip), "--port", str(self.port), "--path", self.path]
        if self.user:
            cmd += ["--user", self.user, "--password", self.password or ""]
        if self.log is not None:
            cmd += ["--log", str(self.log)]
        deadline = time.monotonic() + timeout
        while True:  # the port can stay busy for a moment after a stop
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            line = _read_line(self.proc, deadline)
            if line.startswith("ready"):
                return self
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self._kill()
            if "cannot listen" in err and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            raise AssertionError(f"the RTSP camera did not start ({line!r} {err.strip()!r}); it needs "
                                 f"apt-get install {RTSP_PACKAGES} (.ci/run installs them)")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._kill()
        self.proc = None

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    @property
    def connections(self) -> int:
        """Client connections the server accepted so far (needs `log`)."""
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def __enter__(self) -> "RtspCamera":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _read_line(proc: subprocess.Popen, deadline: float) -> str:
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            return proc.stdout.readline().strip()
        if proc.poll() is not None:
            return ""
    return ""


# -- a virtual display ----------------------------------------------------------------------------

class VirtualDisplay:
    """Xvfb on a free display number (it picks one itself: -displayfd), no TCP listener."""

    def __init__(self, width: int = 1024, height: int = 768):
        self.width, self.height = width, height
        self.proc: Optional[subprocess.Popen] = None
        self.name = ""

    def __enter__(self) -> "VirtualDisplay":
        read_fd, write_fd = os.pipe()
        try:
            self.proc = subprocess.Popen(
                ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{self.width}x{self.height}x24",
                 "-nolisten", "tcp"], pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except FileNotFoundError as err:
            raise AssertionError("Xvfb is missing: apt-get install xvfb (.ci/run installs it)") from err
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            ready, _, _ = select.select([pipe], [], [], 20)
            number = pipe.readline().strip() if ready else ""
        assert number.isdigit(), "Xvfb did not report its display number"
        self.name = f":{number}"
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    @property
    def env(self) -> dict:
        # Qt draws through plain X requests, not MIT-SHM segments: windows of runs on a loaded test
        # machine were seen left black (painted through shared memory that never reached the screen)
        return {**os.environ, "DISPLAY": self.name, "QT_X11_NO_MITSHM": "1"}

    def screenshot(self) -> np.ndarray:
        """The whole screen, RGB (FFmpeg's x11grab through PyAV)."""
        with av.open(self.name, format="x11grab",
                     options={"video_size": f"{self.width}x{self.height}", "use_shm": "0"}) as grab:
            frame = next(grab.decode(video=0))
            return frame.to_ndarray(format="rgb24")

    def xdotool(self, *args: str) -> str:
        try:
            result = subprocess.run(["xdotool", *args], env=self.env, capture_output=True, text=True, timeout=20)
        except FileNotFoundError as err:
            raise AssertionError("xdotool is missing: apt-get install xdotool (.ci/run installs it)") from err
        return result.stdout.strip()

    def find_window(self, title: str, timeout: float = 120) -> str:
        found: List[str] = []

        def search() -> bool:
            found[:] = self.xdotool("search", "--name", title).split()
            return bool(found)

        wait_until(search, timeout, interval=0.5, what=f"a window titled {title!r}")
        return found[0]

    def window_image(self, window: str) -> np.ndarray:
        """The window's area of a screenshot."""
        geometry = dict(line.split("=", 1) for line in self.xdotool("getwindowgeometry", "--shell", window).split())
        x, y, w, h = (int(geometry[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))
        return self.screenshot()[y:y + h, x:x + w]

    def wait_shown(self, window: str, predicate, timeout: float, what) -> None:
        """Until `predicate()` holds for what the window shows. Xvfb has no window manager: on a loaded
        machine Qt was seen to miss the Expose of a window it had just resized, and never paint it (the
        whole screen black while the run called imshow 20 times a second); after 15 s the window is
        mapped again, which exposes it, and the wait goes on."""
        try:
            wait_until(predicate, min(15.0, timeout), interval=0.25)
            return
        except AssertionError:
            self.xdotool("windowunmap", "--sync", window)
            self.xdotool("windowmap", "--sync", window)
        wait_until(predicate, max(timeout - 15.0, 15.0), interval=0.25, what=what)

    def press(self, window: str, key: str) -> None:
        self.xdotool("windowfocus", "--sync", window, "key", key)


# -- a streamer run whose log a test follows --------------------------------------------------------

class Run:
    """A `streamer run` subprocess; its stderr is read as it comes so a test can wait for a line."""

    def __init__(self, *args, env: Optional[dict] = None, **popen):
        self.proc = start_streamer(*args, env=env, **popen)
        self.err_lines: List[str] = []
        self.out = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.err_lines.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self.err_lines)

    def wait_for(self, text: str, timeout: float = 120) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"streamer exited ({self.proc.returncode}) before printing {text!r}:\n"
                                     f"{self.stderr}")
            return any(text in line for line in self.err_lines)

        wait_until(seen, timeout, interval=0.2, what=f"{text!r} in the log")

    def finish(self, timeout: float = 180) -> int:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"streamer did not finish within {timeout} s:\n{self.stderr}")
        self.out = self.proc.stdout.read()
        self._reader.join(timeout=10)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
