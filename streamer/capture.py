"""Live capture: a network stream (PyAV) or a webcam (OpenCV), reconnecting when it drops.

`LiveCapture.connect()` opens the source once, in the caller's thread: an error retrying
cannot fix (`FinalSourceError`: wrong password, wrong path, a missing file) is raised at
once, before anything else starts. A camera that is merely not reachable yet (refused, no
answer, RTSP 5xx: still booting after a power cut) is reported once and left to the capture
thread, which retries it by the reconnect rules. `start()` reads in a thread and hands every
frame to `emit`. When the stream ends, fails or stalls (no packet for `stall_timeout`
seconds: PyAV's read timeout is the watchdog), the capture goes offline and reconnects with
exponential backoff plus jitter, until `max_reconnect_time` seconds offline (or down since
the start) make it give up with a SourceError; a FinalSourceError gives up at once.

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

from .errors import FinalSourceError, SourceError
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
            raise FinalSourceError(f"{name}: the server has no stream at this path (404 Not Found); check the "
                                   "URL's path", reason="no stream at this path (404)") from err
        except av.HTTPUnauthorizedError as err:
            raise FinalSourceError(f"{name}: the camera refused access ({_av_reason(err)}); check user and "
                                   "password", reason="wrong user or password (401)") from err
        except av.HTTPForbiddenError as err:
            raise FinalSourceError(f"{name}: the camera refused access ({_av_reason(err)}); check user and "
                                   "password", reason="access forbidden (403)") from err
        except ConnectionRefusedError as err:
            raise SourceError(f"{name}: connection refused; is the camera or stream server running, and is the "
                              "port right?", reason="connection refused") from err
        except av.ExitError as err:
            raise SourceError(f"{name}: no answer within {s.open_timeout:.0f} s (--open-timeout); is the host "
                              "reachable?", reason=f"no answer within {s.open_timeout:.0f} s") from err
        except (av.FFmpegError, OSError) as err:
            reason = _av_reason(err)
            raise SourceError(f"{name}: cannot open the stream ({reason})", reason=reason) from err
        if not container.streams.video:
            container.close()
            raise FinalSourceError(f"{name}: the stream has no video track", reason="no video track")
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
        except av.DecoderNotFoundError as err:
            raise FinalSourceError(f"{self.spec.name}: no decoder for this stream's codec ({_av_reason(err)})",
                                   reason="unsupported codec") from err
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
        self._opened_once = False

    def open(self) -> None:
        import cv2

        target = int(self.spec.target) if self.spec.target.isdigit() else self.spec.target
        cap = self._opener(target)
        if not cap.isOpened():
            cap.release()
            # never opened: most likely a wrong index or no camera at all (given up at once); one
            # that worked and was unplugged is waited for
            error = SourceError if self._opened_once else FinalSourceError
            raise error(f"cannot open {self.spec.name}: no such camera, or it is busy or not permitted "
                        "(is it plugged in; is another program using it; are you in the 'video' group?)",
                        reason="cannot open the camera device")
        self._opened_once = True
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
        try:
            source.__enter__()
        except SourceError as err:  # a file does not heal by waiting
            raise FinalSourceError(str(err)) from err
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
    """Reads a live source in a thread, reconnecting; counts frames, reconnects and offline time.

    `state` is CONNECTING until the source first opens (with `last_reason` set once an attempt
    failed), LIVE while it delivers, OFFLINE while it reconnects, FAILED once given up (`error`
    says why), STOPPED when it ended. `retry_at`: when the next attempt is due (None: none is)."""

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
        self.retry_at: Optional[float] = None
        self.connected_once = False
        self._offline_total = 0.0
        self._offline_since: Optional[float] = None
        self._t0: Optional[float] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._connect_first = False
        self._rng = random.Random(seed)

    # -- lifecycle ------------------------------------------------------------------------------
    def connect(self) -> bool:
        """The first connection, in the caller's thread. True: the source opened. False: it is
        not reachable yet; that is reported once and the capture thread retries it (start with
        `connect=True`). A FinalSourceError is raised: the camera is given up (state FAILED)."""
        err = self._open()
        if isinstance(err, FinalSourceError):
            self.error, self.state = err, CaptureState.FAILED
            raise err
        if err is not None:
            self._down(err)
            return False
        return True

    def start(self, emit: Callable[[Frame], None], connect: bool = False) -> None:
        """Read in a thread, handing every frame to `emit` (called on that thread). With
        `connect`, the thread opens the source first (a failure is a drop: it reconnects).
        A capture given up at its first connection does not start."""
        if self.state is CaptureState.FAILED:
            return
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

    @property
    def down_reason(self) -> Optional[str]:
        """Why the camera is not delivering, in a few words: None while it is (or first connects)."""
        if self.state is CaptureState.FAILED:
            return f"given up: {self.error.reason if self.error is not None else 'failed'}"
        if self.state in (CaptureState.OFFLINE, CaptureState.CONNECTING) and self.last_reason is not None:
            wait = f", retrying in {max(0.0, self.retry_at - time.monotonic()):.0f} s" if self.retry_at else ", retrying"
            return f"OFFLINE: {self.last_reason}{wait}"
        return None

    # -- the capture thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            if self._connect_first and not self._first_open():
                return
            while not self._stop.is_set():
                error: Optional[SourceError] = None
                try:
                    for image in self.reader.images():
                        self._deliver(image)
                        if self._stop.is_set():
                            return
                except SourceError as err:
                    error = err
                self.reader.close()
                if self._stop.is_set():
                    return
                if self.reader.finite and error is None:
                    self.log(f"{self.spec.name}: end of file ({self.captured} frames)")
                    return
                if isinstance(error, FinalSourceError):
                    self._give_up(error)
                    return
                if not self._reconnect(error or SourceError("the stream ended")):
                    return
        except BaseException as err:  # a bug, not a camera problem: end the run with it
            self.error = SourceError(f"{self.spec.name}: capture failed: {scrub(repr(err))}",
                                     reason=f"capture failed ({type(err).__name__}; see the log)")
            self.state = CaptureState.FAILED
        finally:
            self.reader.close()
            if self.state is not CaptureState.FAILED:
                self.state = CaptureState.STOPPED

    def _first_open(self) -> bool:
        """Open the source in this thread (the caller's connect() closed or never opened it)."""
        if self.last_reason is not None:
            return self._retry()  # not reachable at connect(): retry by the reconnect rules
        err = self._open()  # connect() opened it: open again, a failure is a drop
        if err is None:
            return True
        if isinstance(err, FinalSourceError):
            self._give_up(err)
            return False
        return self._reconnect(err)

    def _open(self) -> Optional[SourceError]:
        """Open the source: None when it opened (now LIVE), else why not."""
        try:
            self.reader.open()
        except SourceError as err:
            return err
        self._up()
        return None

    def _deliver(self, image: np.ndarray) -> None:
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        frame = Frame(index=self.captured, pts=round((now - self._t0) / TIME_BASE), time_base=TIME_BASE,
                      wall_time=now, image=image)
        self.captured += 1
        self.last_frame_time = now
        self._emit(frame)

    def _up(self) -> None:
        """The source opened: after a first failure, or after a drop, that is said once."""
        if self._offline_since is not None:
            self._offline_total += time.monotonic() - self._offline_since
            self._offline_since = None
            if self.connected_once:
                self.reconnects += 1
                self.log(f"{self.spec.name} is back (reconnect {self.reconnects})")
            else:
                self.log(f"{self.spec.name} is up (it was not reachable for {self._offline_total:.0f} s)")
        self.connected_once = True
        self.state, self.last_reason, self.retry_at = CaptureState.LIVE, None, None

    def _down(self, err: SourceError) -> None:
        """Lost (or not reachable at the first connection): said once, then retried."""
        self._offline_since = time.monotonic()
        self.last_reason = err.reason
        limit = self.settings.max_reconnect_time
        if self.connected_once:
            self.state = CaptureState.OFFLINE
            self.log(f"{self.spec.name} dropped: {err}; reconnecting (giving up after {limit:.0f} s offline)")
        else:
            self.state = CaptureState.CONNECTING
            self.log(f"{self.spec.name} is not reachable yet: {err}; retrying with backoff "
                     f"(giving up after {limit:.0f} s, --max-reconnect-time)")

    def _give_up(self, err: SourceError) -> None:
        self.error, self.state, self.retry_at = err, CaptureState.FAILED, None
        self.log(f"{self.spec.name}: giving up: {err} (retrying cannot fix this)")

    def _reconnect(self, err: SourceError) -> bool:
        self._down(err)
        return self._retry()

    def _retry(self) -> bool:
        """Open again with backoff until it works (True), is given up or the capture stops (False)."""
        limit = self.settings.max_reconnect_time
        deadline = self._offline_since + limit
        for delay in backoff_delays(self.settings.backoff_initial, self.settings.backoff_max, self._rng):
            wait = max(0.0, min(delay, deadline - time.monotonic()))
            self.retry_at = time.monotonic() + wait
            if self._stop.wait(wait):
                return False
            if time.monotonic() >= deadline:
                came = "come back" if self.connected_once else "come up"
                self.error = SourceError(
                    f"{self.spec.name} did not {came} within {limit:.0f} s (--max-reconnect-time); "
                    f"last error: {self.last_reason}", reason=f"not reachable for {limit:.0f} s ({self.last_reason})")
                self.state, self.retry_at = CaptureState.FAILED, None
                return False
            self.retry_at = None
            err = self._open()
            if err is None:
                return True
            if isinstance(err, FinalSourceError):
                self._give_up(err)
                return False
            self.last_reason = err.reason
        return False  # unreachable: the delays never end
