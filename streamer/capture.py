"""Live capture: a network stream (PyAV) or a webcam (OpenCV), reconnecting when it drops.

`LiveCapture.connect()` opens the source once, in the caller's thread, so a wrong URL
or a refused connection is a clear error before anything else starts. `start()` then
reads in a thread and hands every frame to `emit`. When the stream ends, fails or
stalls (no packet for `stall_timeout` seconds: PyAV's read timeout is the watchdog),
the capture goes offline and reconnects with exponential backoff plus jitter, until
`max_reconnect_time` seconds offline make it give up with a SourceError.

Frames carry capture wall-clock timestamps (pts in 1/90000 s from the first frame), so
a recording keeps real time across reconnects. Every open and read has a timeout:
nothing here can hang on a dead camera.
"""

from __future__ import annotations

import random
import threading
import time
from fractions import Fraction
from typing import Callable, Iterator, Optional, Protocol

import av
import numpy as np

from .errors import SourceError
from .frames import Frame, from_bgr
from .media import ColourTags, Orientation, PictureConverter, display_matrix
from .settings import CaptureSettings
from .sources import SourceSpec, ffmpeg_reason, scrub
from .states import CaptureState, SourceKind

TIME_BASE = Fraction(1, 90000)


def backoff_delays(initial: float, maximum: float, rng: random.Random) -> Iterator[float]:
    """Exponential backoff with jitter: about initial, 2x, 4x ... up to maximum, each +-25 %."""
    delay = initial
    while True:
        yield delay * rng.uniform(0.75, 1.25)
        delay = min(maximum, delay * 2)


class Reader(Protocol):
    rate: Optional[Fraction]
    size: Optional[tuple]
    finite: bool  # a file played as a camera: its end is the end (not a drop)

    def open(self) -> None: ...

    def images(self) -> Iterator[np.ndarray]: ...

    def close(self) -> None: ...


def _av_reason(err: Exception) -> str:
    return scrub(ffmpeg_reason(err))


class NetworkReader:
    """rtsp://, http(s)://, rtmp://, srt://, udp:// ... through PyAV, with open and read timeouts."""

    finite = False

    def __init__(self, spec: SourceSpec, settings: CaptureSettings,
                 log: Callable[[str], None] = lambda message: None):
        self.spec = spec
        self.settings = settings
        self.log = log
        self.rate: Optional[Fraction] = None
        self.size: Optional[tuple] = None
        self._container = None
        self._stream = None
        self._warned: Optional[str] = None

    def open(self) -> None:
        options = {}
        if self.spec.target.lower().startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = self.settings.rtsp_transport
        name, s = self.spec.name, self.settings
        try:
            container = av.open(self.spec.target, mode="r", options=options,
                                timeout=(s.open_timeout, s.stall_timeout))
        except av.HTTPNotFoundError as err:
            raise SourceError(f"{name}: the server has no stream at this path (404 Not Found); check the URL's path") from err
        except (av.HTTPUnauthorizedError, av.HTTPForbiddenError) as err:
            raise SourceError(f"{name}: the camera refused access ({_av_reason(err)}); check user and password") from err
        except ConnectionRefusedError as err:
            raise SourceError(f"{name}: connection refused; is the camera or stream server running, and is the port right?") from err
        except av.ExitError as err:
            raise SourceError(f"{name}: no answer within {s.open_timeout:.0f} s (--open-timeout); is the host reachable?") from err
        except (av.FFmpegError, OSError) as err:
            raise SourceError(f"{name}: cannot open the stream ({_av_reason(err)})") from err
        if not container.streams.video:
            container.close()
            raise SourceError(f"{name}: the stream has no video track")
        self._container = container
        self._stream = container.streams.video[0]
        ctx = self._stream.codec_context
        self.size = (ctx.width, ctx.height) if ctx.width and ctx.height else None
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.rate = Fraction(rate) if rate else None

    def images(self) -> Iterator[np.ndarray]:
        """Upright RGB pictures: a display rotation the stream signals (read from its first
        frame) is applied to every frame, and HDR is tone-mapped to SDR, as for files."""
        picture = None
        try:
            for vframe in self._container.decode(self._stream):
                if picture is None:
                    picture = self._picture(vframe)
                yield picture.rgb(vframe)
        except av.ExitError as err:
            raise SourceError(f"no data for {self.settings.stall_timeout:.0f} s (stalled)") from err
        except (av.FFmpegError, OSError) as err:
            raise SourceError(f"the stream broke ({_av_reason(err)})") from err

    def _picture(self, vframe) -> PictureConverter:
        orientation, warning = Orientation.from_matrix(display_matrix(vframe))
        if warning and warning != self._warned:
            self._warned = warning
            self.log(f"WARNING: {self.spec.name}: {warning}")
        if self.size is not None:
            self.size = orientation.size(*self.size)
        return PictureConverter(orientation, ColourTags.of(vframe))

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except (av.FFmpegError, OSError):
                pass
            self._container = None


class WebcamReader:
    """A local camera through OpenCV: `0` (index) or `/dev/video0`. Kept minimal on purpose."""

    finite = False

    def __init__(self, spec: SourceSpec, settings: CaptureSettings, opener=None):
        import cv2

        self.spec = spec
        self.settings = settings
        self.rate: Optional[Fraction] = None
        self.size: Optional[tuple] = None
        self._opener = opener or cv2.VideoCapture
        self._cap = None

    def open(self) -> None:
        import cv2

        target = int(self.spec.target) if self.spec.target.isdigit() else self.spec.target
        cap = self._opener(target)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.spec.name}: no such camera, or it is busy or not permitted "
                              "(is it plugged in; is another program using it; are you in the 'video' group?)")
        if hasattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC"):
            cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.settings.stall_timeout * 1000)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.rate = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else None
        self._cap = cap

    def images(self) -> Iterator[np.ndarray]:
        while True:
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                return  # unplugged, or the device stopped: the capture reconnects
            yield from_bgr(bgr)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FileCameraReader:
    """A video file played like a camera: at its own pace (its timestamps against the wall
    clock), from its start; at its end it stops, or starts again with `loop`."""

    finite = True

    def __init__(self, spec: SourceSpec, settings: CaptureSettings, loop: bool = False,
                 log: Callable[[str], None] = lambda message: None):
        self.spec = spec
        self.settings = settings
        self.loop = loop
        self.log = log
        self.rate: Optional[Fraction] = None
        self.size: Optional[tuple] = None
        self._source = None

    def open(self) -> None:
        from pathlib import Path

        from .sources import FileSource

        source = FileSource(Path(self.spec.target), audio=False, log=self.log)  # upright, SDR, no audio
        source.__enter__()
        self._source = source
        self.size = (source.info.width, source.info.height)
        self.rate = source.info.average_rate

    def images(self) -> Iterator[np.ndarray]:
        from pathlib import Path

        from .sources import FileSource

        while self._source is not None:
            start = time.monotonic()
            first: Optional[float] = None
            for frame in self._source.frames():
                if frame.time is not None:
                    first = frame.time if first is None else first
                    due = start + frame.time - first
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                yield frame.image
            if not self.loop:
                return
            self._source.__exit__(None, None, None)
            self._source = FileSource(Path(self.spec.target), audio=False).__enter__()

    def close(self) -> None:
        if self._source is not None:
            self._source.__exit__(None, None, None)
            self._source = None


def make_reader(spec: SourceSpec, settings: CaptureSettings, loop: bool = False,
                log: Callable[[str], None] = lambda message: None) -> Reader:
    if spec.kind is SourceKind.WEBCAM:
        return WebcamReader(spec, settings)
    if spec.kind is SourceKind.NETWORK:
        return NetworkReader(spec, settings, log)
    return FileCameraReader(spec, settings, loop=loop, log=log)


class LiveCapture:
    """Reads a live source in a thread, reconnecting; counts frames, reconnects and offline time."""

    def __init__(self, spec: SourceSpec, reader: Reader, settings: CaptureSettings,
                 log: Callable[[str], None], seed: Optional[int] = None):
        self.spec = spec
        self.reader = reader
        self.settings = settings
        self.log = log
        self._emit: Callable[[Frame], None] = lambda frame: None
        self.state = CaptureState.CONNECTING
        self.captured = 0
        self.reconnects = 0
        self.error: Optional[SourceError] = None
        self.last_reason: Optional[str] = None
        self.last_frame_time: Optional[float] = None
        self._offline_total = 0.0
        self._offline_since: Optional[float] = None
        self._t0: Optional[float] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._connect_first = False
        self._rng = random.Random(seed)

    # -- lifecycle ------------------------------------------------------------------------------
    def connect(self) -> None:
        """The first connection, in the caller's thread: its failure is the run's error."""
        self.reader.open()
        self.state = CaptureState.LIVE

    def start(self, emit: Callable[[Frame], None], connect: bool = False) -> None:
        """Read in a thread, handing every frame to `emit` (called on that thread). With
        `connect`, the thread opens the source first (a failure is a drop: it reconnects)."""
        self._emit = emit
        self._connect_first = connect
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: Optional[float] = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def offline_for(self) -> float:
        """Seconds of the current outage (0 while live)."""
        return time.monotonic() - self._offline_since if self._offline_since is not None else 0.0

    @property
    def offline_seconds(self) -> float:
        return self._offline_total + self.offline_for

    # -- the capture thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            if self._connect_first:
                try:
                    self.reader.open()
                    self.state = CaptureState.LIVE
                except SourceError as err:
                    if not self._reconnect(str(err)):
                        return
            while not self._stop.is_set():
                reason, ended = "the stream ended", True
                try:
                    for image in self.reader.images():
                        self._deliver(image)
                        if self._stop.is_set():
                            return
                except SourceError as err:
                    reason, ended = str(err), False
                self.reader.close()
                if self._stop.is_set():
                    return
                if self.reader.finite and ended:
                    self.log(f"{self.spec.name}: end of file ({self.captured} frames)")
                    return
                if not self._reconnect(reason):
                    return
        except BaseException as err:  # a bug, not a camera problem: end the run with it
            self.error = SourceError(f"{self.spec.name}: capture failed: {scrub(repr(err))}")
            self.state = CaptureState.FAILED
        finally:
            self.reader.close()
            if self.state is not CaptureState.FAILED:
                self.state = CaptureState.STOPPED

    def _deliver(self, image: np.ndarray) -> None:
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        frame = Frame(index=self.captured, pts=round((now - self._t0) / TIME_BASE), time_base=TIME_BASE,
                      wall_time=now, image=image)
        self.captured += 1
        self.last_frame_time = now
        self._emit(frame)

    def _reconnect(self, reason: str) -> bool:
        self.state = CaptureState.OFFLINE
        self._offline_since = time.monotonic()
        self.last_reason = reason
        limit = self.settings.max_reconnect_time
        self.log(f"{self.spec.name} dropped: {reason}; reconnecting (giving up after {limit:.0f} s offline)")
        deadline = self._offline_since + limit
        for delay in backoff_delays(self.settings.backoff_initial, self.settings.backoff_max, self._rng):
            if self._stop.wait(max(0.0, min(delay, deadline - time.monotonic()))):
                return False
            if time.monotonic() >= deadline:
                self.error = SourceError(
                    f"{self.spec.name} did not come back within {limit:.0f} s (--max-reconnect-time); "
                    f"last error: {self.last_reason}")
                self.state = CaptureState.FAILED
                return False
            try:
                self.reader.open()
            except SourceError as err:
                self.last_reason = str(err)
                continue
            self._offline_total += time.monotonic() - self._offline_since
            self._offline_since = None
            self.reconnects += 1
            self.state = CaptureState.LIVE
            self.log(f"{self.spec.name} is back (reconnect {self.reconnects})")
            return True
        return False  # unreachable: the delays never end
