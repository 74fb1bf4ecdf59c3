"""Wire the stages for a live source: capture fans out to display/record and to inference.

    capture thread ──every frame──▶ display queue ──▶ main thread: draw newest detections,
          │                                           HUD, window, mp4 (every frame)
          └──newest frame──▶ LatestSlot ──▶ inference thread (gRPC stream) ──▶ outcomes
                                                                                 (JSONL)

The window keeps the camera's pace whatever the model's speed: inference takes the
newest frame whenever it has a free slot, so detections are never older than one
inference; frames it never took are counted as skipped. Accounting holds exactly:
captured = shown + dropped-for-display (0 unless display falls behind) + the few
still queued when the run stops, and
captured = inferred + failed + skipped.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, List, Optional, Sequence

import cv2
import numpy as np

from . import interrupts
from .capture import LiveCapture
from .frame_queue import FrameQueue, LatestSlot
from .frames import Detections, Frame
from .pipeline import p50_p95
from .render import draw_hud
from .triton import InferenceStream, Outcome
from .window import Window

Annotate = Callable[[np.ndarray, Detections], np.ndarray]
Select = Callable[[Detections], Detections]


@dataclass
class LiveStats:
    captured: int = 0
    shown: int = 0
    dropped_display: int = 0  # frames the display/recording could not keep up with
    cut_at_exit: int = 0  # captured while the run was stopping, never shown
    taken: int = 0  # frames inference took (each becomes inferred, failed or aborted at exit)
    inferred: int = 0
    failed: int = 0
    skipped: int = 0  # frames inference never took (it was busy), incl. any cut off at exit
    reconnects: int = 0
    offline: float = 0.0
    server_reconnects: int = 0
    ages: List[float] = field(default_factory=list)  # capture -> display, seconds, per shown frame
    latencies: List[float] = field(default_factory=list)  # send -> answer, seconds, per inferred frame
    started: float = field(default_factory=time.monotonic)
    finished: Optional[float] = None
    quit: bool = False
    interrupted: bool = False
    first_error: Optional[str] = None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def line(self) -> str:
        el = max(self.elapsed, 1e-9)
        parts = [
            f"live: captured {self.captured}, shown {self.shown}, inferred {self.inferred}, "
            f"skipped for inference {self.skipped}, failed {self.failed}"
            + (f", dropped for display {self.dropped_display}" if self.dropped_display else "")
            + (f", not shown (run ending) {self.cut_at_exit}" if self.cut_at_exit else ""),
            f"display {self.shown / el:.1f} fps, detections {self.inferred / el:.2f}/s",
        ]
        if self.ages:
            parts.append(f"frame age {p50_p95(self.ages)}")
        if self.latencies:
            parts.append(f"inference p50 {np.median(self.latencies) * 1000:.0f} ms")
        parts.append(f"reconnects {self.reconnects}, offline {self.offline:.1f} s")
        if self.server_reconnects:
            parts.append(f"server reconnects {self.server_reconnects}")
        return " | ".join(parts)


class Rate:
    """Events per second over the last `window` seconds (for the HUD)."""

    def __init__(self, window: float = 2.0):
        self.window = window
        self._times: Deque[float] = deque()

    def tick(self, now: float) -> None:
        self._times.append(now)

    def per_second(self, now: float) -> float:
        while self._times and self._times[0] < now - self.window:
            self._times.popleft()
        return len(self._times) / self.window


@dataclass
class _Interval:
    """What happened since the last status line."""

    start: float
    shown0: int = 0
    inferred0: int = 0
    ages: List[float] = field(default_factory=list)
    result_ages: List[float] = field(default_factory=list)


class RecordingSink:
    """The mp4 of a live run: opened at the first frame's size; later frames of another
    size (a camera that reconnected at a new resolution) are scaled to it."""

    def __init__(self, open_sink: Callable[[int, int], object]):
        self._open_sink = open_sink
        self.sink = None
        self.size = None

    def write(self, frame: Frame, image: np.ndarray, detections: Optional[Detections]) -> None:
        if self.sink is None:
            self.size = (image.shape[1], image.shape[0])
            self.sink = self._open_sink(*self.size)
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.sink.write(frame, image, detections)


@dataclass
class LivePipeline:
    capture: LiveCapture
    inference: InferenceStream
    select: Select
    annotate: Annotate
    recorders: Sequence = ()  # sinks for every shown frame (the annotated mp4)
    result_sinks: Sequence = ()  # sinks for every inference result (JSONL)
    window: Optional[Window] = None
    hold: Optional[float] = None  # seconds detections stay drawn; None: auto
    max_frames: Optional[int] = None
    source_rate: Optional[float] = None
    display_queue: int = 32
    status_every: float = 0.0  # seconds between status lines on the log (0: none)
    log: Callable[[str], None] = print

    def __post_init__(self):
        self.stats = LiveStats()
        self._frames: FrameQueue[Frame] = FrameQueue(self.display_queue)
        self._slot: LatestSlot[Frame] = LatestSlot()
        self._outcomes: "queue.Queue[Outcome]" = queue.Queue()
        self._inference_error: List[BaseException] = []
        self._latest: Optional[Outcome] = None
        self._display_rate = Rate()
        self._capture_rate = Rate()
        self._result_rate = Rate()
        self._last_shown: Optional[np.ndarray] = None
        self._interval = _Interval(time.monotonic())

    # -- the two worker threads' ends --------------------------------------------------------------
    def _emit(self, frame: Frame) -> None:
        """Called by the capture thread for every frame."""
        if self.max_frames is not None and frame.index >= self.max_frames:
            self.capture.stop()
            return
        self.stats.captured += 1
        self._capture_rate.tick(frame.wall_time)
        if self._frames.put_latest(frame) is not None:
            self.stats.dropped_display += 1
        self._slot.put(frame)

    def _infer(self) -> None:
        def taken():
            while True:
                frame = self._slot.get()
                if frame is None:
                    return
                self.stats.taken += 1
                yield frame

        try:
            for outcome in self.inference.process(taken()):
                self._outcomes.put(outcome)
        except BaseException as err:  # handed to the main thread
            self._inference_error.append(err)

    # -- the main thread ----------------------------------------------------------------------------
    def _collect(self, now: float) -> None:
        while True:
            try:
                outcome = self._outcomes.get_nowait()
            except queue.Empty:
                return
            if outcome.ok:
                self.stats.inferred += 1
                self._interval.result_ages.append(now - outcome.frame.wall_time)
                if outcome.latency is not None:
                    self.stats.latencies.append(outcome.latency)
                outcome = Outcome(outcome.frame, self.select(outcome.detections), None, outcome.latency)
                self._latest = outcome
                self._result_rate.tick(now)
            else:
                self.stats.failed += 1
                self.stats.first_error = self.stats.first_error or outcome.error
            with interrupts.critical():
                for sink in self.result_sinks:
                    sink.write(outcome.frame, outcome.frame.image, outcome.detections)

    def _hold_limit(self) -> float:
        if self.hold is not None:
            return self.hold
        recent = self.stats.latencies[-5:]
        return max(2.0, 3 * float(np.median(recent))) if recent else 2.0

    def _detections_for(self, frame: Frame) -> Optional[Outcome]:
        latest = self._latest
        if latest is None:
            return None
        if self.hold == 0:
            return latest if latest.frame.index == frame.index else None
        if frame.wall_time - latest.frame.wall_time > self._hold_limit():
            return None
        return latest

    def _hud(self, image: np.ndarray, frame: Optional[Frame], shown: Optional[Outcome], now: float) -> np.ndarray:
        cap = self.capture
        source = f"source {self._capture_rate.per_second(now):.1f} fps"
        if self.source_rate:
            source += f" (nominal {self.source_rate:.1f})"
        lines = [
            f"display {self._display_rate.per_second(now):.1f} fps | {source}",
            f"detections {self._result_rate.per_second(now):.2f}/s | skipped for inference {self._slot.skipped}",
            f"frame age {(now - frame.wall_time) * 1000:.0f} ms | detections age "
            + (f"{(now - shown.frame.wall_time) * 1000:.0f} ms ({len(shown.detections)})" if shown else "-")
            if frame is not None else "frame age -",
            f"camera {cap.state} | inference {self.inference.state}"
            + (f" | reconnects {cap.reconnects}" if cap.reconnects else ""),
        ]
        banner = None
        if cap.state == "offline":
            banner = f"OFFLINE - reconnecting ({cap.offline_for:.0f} s)"
        elif cap.last_frame_time is not None and now - cap.last_frame_time > 2.0 and cap.state == "live":
            banner = f"NO FRAMES FOR {now - cap.last_frame_time:.0f} s"
        elif self.inference.state != "online":
            banner = "INFERENCE OFFLINE"
        return draw_hud(image, lines, banner)

    def _show(self, frame: Frame, now: float) -> bool:
        """Draw, record and display one captured frame. False: the user closed the window."""
        shown = self._detections_for(frame)
        image = self.annotate(frame.image, shown.detections) if shown is not None else frame.image
        with interrupts.critical():
            for sink in self.recorders:
                sink.write(frame, image, shown.detections if shown else None)
        self.stats.shown += 1
        self.stats.ages.append(now - frame.wall_time)
        self._interval.ages.append(now - frame.wall_time)
        self._display_rate.tick(now)
        if self.window is None:
            return True
        self._last_shown = image
        return self.window.show(self._hud(image, frame, shown, now))

    def _idle(self, now: float) -> bool:
        """No new frame: keep the window responsive, with the banner. False: closed."""
        if self.window is None or self._last_shown is None:
            return True
        return self.window.show(self._hud(self._last_shown, None, None, now))

    def _status(self, now: float) -> None:
        """Every `status_every` seconds, one line on the log about that interval."""
        iv = self._interval
        if not self.status_every or now - iv.start < self.status_every:
            return
        span = now - iv.start
        shown, inferred = self.stats.shown - iv.shown0, self.stats.inferred - iv.inferred0
        age = f"frame age {p50_p95(iv.ages)}" if iv.ages else "no frames"
        result_age = (f", detections {np.median(iv.result_ages) * 1000:.0f} ms old on arrival"
                      if iv.result_ages else "")
        self.log(f"[{now - self.stats.started:.0f} s] display {shown / span:.1f} fps, detections "
                 f"{inferred / span:.2f}/s, {age}{result_age}, skipped for inference {self._slot.skipped}, "
                 f"camera {self.capture.state}, inference {self.inference.state}")
        self._interval = _Interval(now, self.stats.shown, self.stats.inferred)

    def run(self) -> LiveStats:
        stats = self.stats
        inferrer = threading.Thread(target=self._infer, name="inference", daemon=True)
        self.capture.start(self._emit)
        inferrer.start()
        try:
            while True:
                frame = self._frames.get(timeout=0.05)
                now = time.monotonic()
                self._collect(now)
                self._status(now)
                if self._inference_error:
                    break
                if frame is None:
                    if not self.capture.running and not len(self._frames):
                        break  # the source ended, failed or hit --max-frames
                    if not self._idle(now):
                        stats.quit = True
                        break
                    continue
                if not self._show(frame, now):
                    stats.quit = True
                    break
        except KeyboardInterrupt:
            stats.interrupted = True
        finally:
            self.capture.stop()
            self._slot.close()
            self.inference.abort()
            self._frames.cancel()
            self.capture.join(timeout=15)
            inferrer.join(timeout=15)
            self._collect(time.monotonic())
            stats.finished = time.monotonic()
            stats.skipped = self._slot.skipped + (stats.taken - stats.inferred - stats.failed)
            stats.reconnects = self.capture.reconnects
            stats.offline = self.capture.offline_seconds
            stats.server_reconnects = self.inference.reconnects
            stats.cut_at_exit = stats.captured - stats.shown - stats.dropped_display  # still queued at the end
        if self._inference_error:
            raise self._inference_error[0]
        return stats
