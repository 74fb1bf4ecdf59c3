"""The live scheduler: capture fans out to display/record and to inference.

    capture thread ──every frame──▶ display queue ──▶ main thread: stages (tracker or hold),
          │                                           annotators, sinks (every frame), displays
          └──newest frame──▶ LatestSlot ──▶ inference thread (one Inference) ──▶ answers
                                                  (stages' answer(), sinks of inferred frames)

The picture keeps the camera's pace whatever the model's speed: inference takes the newest
frame offered whenever it has a free slot, so detections are never older than one inference;
frames it never took are counted as skipped. Which frames are offered is the camera's
`policy.InferPolicy` (--infer-every N, and with --infer-on motion only frames where something
moves, plus a re-check every --stationary-interval), asked as each frame is captured; a camera
that offers nothing takes no inference, so the shared server follows the motion. A display
step shows only the frames waiting when it starts, so a step slower than the camera still ends.
Accounting holds exactly:
captured = shown + dropped-for-display (0 unless display falls behind) + the few
still queued when the run stops, and
captured = inferred + failed + skipped, skipped = busy + every + still (by reason).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from . import interrupts
from .capture import LiveCapture
from .errors import SourceError
from .frame_queue import FrameQueue, LatestSlot
from .frames import Detections, Frame, Outcome
from .metrics import LatencyHistogram
from .motion import Motion
from .pipeline import count_labels, draw, overlay, p50_p95, reasons_json
from .policy import InferPolicy
from .tracking import capture_time
from .report import StreamReport, percentiles_ms
from .stages import Annotator, Display, Inference, RecordingStatus, Sink, Stage, View
from .states import CaptureState, InferenceState, RecordingState, SkipReason, StreamKind, ViewState
from .triton import IDLE, IDLE_WAIT

RECENT = 50_000  # observations kept for the p50/p95 of a live run's summary


@dataclass
class LiveStats:
    captured: int = 0
    shown: int = 0
    dropped_display: int = 0  # frames the display/recording could not keep up with
    cut_at_exit: int = 0  # captured while the run was stopping, never shown
    taken: int = 0  # frames inference took (each becomes inferred, failed or aborted at exit)
    not_offered: int = 0  # frames the policy kept from inference (counted as skipped): every + still
    skipped_every: int = 0  # ... because of --infer-every N
    skipped_still: int = 0  # ... because nothing moved (--infer-on motion)
    inferred: int = 0
    failed: int = 0
    skipped: int = 0  # frames inference never took (it was busy), incl. any cut off at exit
    reconnects: int = 0
    offline: float = 0.0
    server_reconnects: int = 0
    # capture -> display, seconds: the most recent ones (memory stays flat for days)
    ages: Deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    # capture of the answered frame behind the drawn boxes -> display, seconds (the most recent ones)
    detection_ages: Deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    motion_frames: Optional[int] = None  # frames that showed motion (None: no motion detector)
    # send -> answer per inferred frame: Prometheus buckets over the run + recent values for p50
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    started: float = field(default_factory=time.monotonic)
    finished: Optional[float] = None
    quit: bool = False
    interrupted: bool = False
    first_error: Optional[str] = None
    camera_state: CaptureState = CaptureState.CONNECTING  # at the end: STOPPED, or FAILED (given up)
    camera_error: Optional[SourceError] = None  # why it was given up
    given_up: Optional[str] = None  # "given up: REASON" (the capture's down_reason), None: it was not
    recording: Optional[RecordingStatus] = None  # how the camera's recording ended (None: nothing recorded)

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
        p50 = self.latency.quantile(0.5)
        if p50 is not None:
            parts.append(f"inference p50 {p50 * 1000:.0f} ms")
        parts.append(f"reconnects {self.reconnects}, offline {self.offline:.1f} s")
        if self.server_reconnects:
            parts.append(f"server reconnects {self.server_reconnects}")
        if self.skipped_still:
            parts.append("skipped " + ", ".join(f"{reason} {n}" for reason, n in self.skipped_by().items()))
        if self.given_up:
            parts.append(self.given_up)
        if self.recording is not None and not self.recording.ok:
            parts.append(f"{self.recording.line()}, not recorded {self.recording.not_recorded}")
        return " | ".join(parts)


    @property
    def skipped_busy(self) -> int:
        """Frames offered that inference never took (a newer one went instead, or the run ended)."""
        return self.skipped - self.skipped_every - self.skipped_still

    def skipped_by(self) -> Dict[SkipReason, int]:
        return {SkipReason.BUSY: self.skipped_busy, SkipReason.EVERY: self.skipped_every,
                SkipReason.STILL: self.skipped_still}

    def report(self, name: str, detections_by_class: Dict[str, int]) -> StreamReport:
        """This camera's part of the run report."""
        motion = None
        if self.motion_frames is not None:
            motion = {"frames": self.motion_frames, "share": round(self.motion_frames / max(1, self.captured), 4)}
        return StreamReport(
            name=name, kind=StreamKind.LIVE,
            frames={"captured": self.captured, "shown": self.shown, "inferred": self.inferred,
                    "skipped": self.skipped, "failed": self.failed, "dropped": self.dropped_display,
                    "not_shown_at_exit": self.cut_at_exit},
            fps=self.shown / max(self.elapsed, 1e-9), latency_ms=percentiles_ms(self.latency.recent()),
            detections_by_class=dict(detections_by_class), reconnects=self.reconnects,
            frame_age_ms=percentiles_ms(self.ages), camera=str(self.camera_state),
            error=None if self.camera_error is None else str(self.camera_error),
            skipped_by_reason=reasons_json(self.skipped_by(), SkipReason),
            detection_age_ms=percentiles_ms(self.detection_ages), motion=motion,
            recording=None if self.recording is None else self.recording.to_json())


RATE_MAX_EVENTS = 4096  # a Rate's window holds at most this many events (2048 a second over 2 s)
INTERVAL_SAMPLES = 2048  # ages a status line's median looks at (the most recent ones of its interval)


class Rate:
    """Events per second over the last `window` seconds (for the HUD).

    Bounded by construction: each tick drops the events older than the window (whether or not
    anyone asks for the rate: a headless run never does), and the window holds at most
    `max_events` (more in a window counts as that many)."""

    def __init__(self, window: float = 2.0, max_events: int = RATE_MAX_EVENTS):
        self.window = window
        self._times: Deque[float] = deque(maxlen=max_events)

    def _prune(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window:
            self._times.popleft()

    def tick(self, now: float) -> None:
        self._times.append(now)
        self._prune(now)

    def per_second(self, now: float) -> float:
        self._prune(now)
        return len(self._times) / self.window

    def __len__(self) -> int:
        """Events held now."""
        return len(self._times)


def _samples() -> Deque[float]:
    return deque(maxlen=INTERVAL_SAMPLES)


@dataclass
class _Interval:
    """What happened since the last status line (the most recent INTERVAL_SAMPLES ages: a run
    without status lines never starts a new interval)."""

    start: float
    shown0: int = 0
    inferred0: int = 0
    ages: Deque[float] = field(default_factory=_samples)
    result_ages: Deque[float] = field(default_factory=_samples)


_VIEW_STATES = {CaptureState.CONNECTING: ViewState.CONNECTING, CaptureState.LIVE: ViewState.UP,
                CaptureState.OFFLINE: ViewState.OFFLINE, CaptureState.FAILED: ViewState.OFFLINE,
                CaptureState.STOPPED: ViewState.ENDED}


class CameraFeed:
    """One live camera: every captured frame goes to its display queue (through the stages, drawn,
    written to the sinks that take every frame), the newest one also to its inference slot.
    Answers come back through `deliver()` and go through the stages to the sinks that keep
    inferred frames only. Owns the camera's counters (`stats`)."""

    def __init__(self, name: str, capture: LiveCapture, stages: Stage, annotators: Sequence[Annotator] = (),
                 sinks: Sequence[Sink] = (), max_frames: Optional[int] = None, source_rate: Optional[float] = None,
                 display_queue: int = 32, wake: Optional[threading.Event] = None, stats: Optional[LiveStats] = None,
                 outputs: Sequence[str] = (), infer_every: int = 1, tracks: Callable[[], int] = lambda: 0,
                 overlays: Sequence[Annotator] = (), events: Optional[object] = None,
                 event_outputs: Callable[[], Sequence] = lambda: (),
                 policy: Optional[InferPolicy] = None, motion_drawer: Optional[Callable] = None,
                 recording: Callable[[], Optional[RecordingStatus]] = lambda: None):
        self.name = name
        self.capture = capture
        self.stages = stages
        self.annotators = list(annotators)
        self.every_frame_sinks = [sink for sink in sinks if sink.every_frame]
        self.answer_sinks = [sink for sink in sinks if not sink.every_frame]
        self.max_frames = max_frames
        self.source_rate = source_rate
        self.outputs = tuple(outputs)
        # which captured frames are offered to inference (default: every Nth)
        self.policy = policy or InferPolicy(every=infer_every, clock=capture_time)
        self.motion_drawer = motion_drawer  # --draw-motion: (image, Motion) -> the live view's image
        self._motions: Deque[Tuple[int, Optional[Motion]]] = deque(maxlen=64)  # recent frames' motion
        self._policy_reconnects = 0
        self.tracks = tracks  # tracks the camera's tracker holds now (0 without one)
        self.overlays = list(overlays)  # drawn on the displays' picture only (zones and lines)
        self.events = events  # the camera's event stage (its counts and recent events; None: none)
        self.event_outputs = event_outputs  # the run's event outputs' statuses
        self._overlaid: Optional[Tuple[np.ndarray, np.ndarray]] = None  # (drawn image, with the overlays)
        self.recording = recording  # how the camera's recording is doing now (None: it records nothing)
        self._reconnects_seen = 0
        self.wake = wake or threading.Event()
        self.stats = stats or LiveStats()
        self.frames: FrameQueue[Frame] = FrameQueue(display_queue)
        self.slot: LatestSlot[Frame] = LatestSlot()
        self.outcomes: "queue.Queue[Outcome]" = queue.Queue()
        self.last_answer: Optional[Frame] = None  # the frame of the newest answer with detections
        self.last_served: Optional[float] = None  # when inference last took a frame of this camera
        self.last_image: Optional[np.ndarray] = None  # the newest drawn frame (for the displays)
        self.last_frame: Optional[Frame] = None
        self.last_detections: Optional[Detections] = None  # what is drawn on last_image
        self.frame_age: Optional[float] = None  # age of the newest frame when it was shown
        self.detections_by_class: Dict[int, int] = {}
        self._fresh = False
        self._display_rate = Rate()
        self._capture_rate = Rate()
        self._result_rate = Rate()
        self._interval = _Interval(time.monotonic())

    # -- the capture thread ---------------------------------------------------------------------
    def emit(self, frame: Frame) -> None:
        if self.max_frames is not None and frame.index >= self.max_frames:
            self.capture.stop()
            return
        self.stats.captured += 1
        self._capture_rate.tick(frame.wall_time)
        if self.capture.reconnects != self._policy_reconnects:  # a new connection: its first frame is offered
            self._policy_reconnects = self.capture.reconnects
            self.policy.reset()
        skip = self.policy.decide(frame)
        if self.policy.motion is not None:
            if self.policy.motion.moving:
                self.stats.motion_frames = (self.stats.motion_frames or 0) + 1
            self._motions.append((frame.index, self.policy.motion))
        if self.frames.put_latest(frame) is not None:
            self.stats.dropped_display += 1
        if skip is None:
            self.slot.put(frame)
        else:
            self.stats.not_offered += 1
            if skip is SkipReason.STILL:
                self.stats.skipped_still += 1
            else:
                self.stats.skipped_every += 1
        self.wake.set()

    # -- the inference thread -----------------------------------------------------------------
    def deliver(self, outcome: Outcome) -> None:
        self.outcomes.put(outcome)
        self.wake.set()

    # -- the main thread ----------------------------------------------------------------------
    @property
    def ended(self) -> bool:
        """The capture stopped (end of a file camera, --max-frames, given up) and all is shown."""
        return not self.capture.running and not len(self.frames)

    def collect(self) -> None:
        """Take the inference answers that arrived: through the stages to the detections log."""
        while True:
            try:
                outcome = self.outcomes.get_nowait()
            except queue.Empty:
                return
            now = time.monotonic()
            if outcome.ok:
                self.stats.inferred += 1
                self._interval.result_ages.append(now - outcome.frame.wall_time)
                if outcome.latency is not None:
                    self.stats.latency.observe(outcome.latency)
                self.last_answer = outcome.frame
                self._result_rate.tick(now)
            else:
                self.stats.failed += 1
                self.stats.first_error = self.stats.first_error or outcome.error
            detections = self.stages.answer(outcome.frame, outcome.detections)
            count_labels(self.detections_by_class, detections)
            with interrupts.critical():
                for sink in self.answer_sinks:
                    sink.write(outcome.frame, outcome.frame.image, detections)

    def next_frame(self) -> Optional[Frame]:
        return self.frames.get(timeout=0)

    def show_waiting(self) -> int:
        """Show the frames waiting now (not those captured meanwhile: a step that is slower than the
        camera must still end, so answers are collected and the displays refreshed). How many."""
        shown = 0
        for _ in range(len(self.frames)):
            frame = self.next_frame()
            if frame is None:
                break
            self.show(frame)
            shown += 1
        return shown

    def show(self, frame: Frame) -> np.ndarray:
        """Draw one captured frame with what the stages hold for it and record it; the drawn image."""
        image = frame.image
        if self.capture.reconnects != self._reconnects_seen:  # a new connection: the old tracks are gone
            self._reconnects_seen = self.capture.reconnects
            self.stages.reset()
        for released, detections in self.stages.push(frame, None):
            image = draw(released.image, detections, self.annotators)
            with interrupts.critical():  # recorded and counted together, even when Ctrl-C arrives meanwhile
                for sink in self.every_frame_sinks:
                    sink.write(released, image, detections)
                self.stats.shown += 1
            shown_at = time.monotonic()  # the age is measured when the frame is shown, never before
            self.frame_age = shown_at - released.wall_time
            self.stats.ages.append(self.frame_age)
            self._interval.ages.append(self.frame_age)
            self._display_rate.tick(shown_at)
            self.last_image, self.last_frame, self.last_detections = self._viewed(released, image), released, detections
            age = self.detection_age(shown_at)
            if age is not None:
                self.stats.detection_ages.append(age)
            self._fresh = True
        return image

    def _viewed(self, frame: Frame, image: np.ndarray) -> np.ndarray:
        """What the displays show of a drawn frame: with --draw-motion, its motion regions too
        (the recording never has them)."""
        if self.motion_drawer is None:
            return image
        motion = next((m for index, m in reversed(list(self._motions)) if index == frame.index), None)
        return image if motion is None else self.motion_drawer(image, motion)

    @property
    def motion(self) -> Optional[bool]:
        """Whether the camera sees motion now (None: no motion detector)."""
        return self.policy.sees_motion

    @property
    def skipped_now(self) -> int:
        """Frames inference did not take so far (busy, or kept from it by the policy)."""
        return self.slot.skipped + self.stats.not_offered

    def skipped_by_now(self) -> Dict[str, int]:
        """skipped_now by reason (frames taken and not answered yet are not skipped)."""
        return reasons_json({SkipReason.BUSY: self.slot.skipped, SkipReason.EVERY: self.stats.skipped_every,
                             SkipReason.STILL: self.stats.skipped_still}, SkipReason)

    def detection_age(self, now: float) -> Optional[float]:
        """Seconds since the frame behind the drawn detections was captured (None: nothing drawn)."""
        if self.last_detections is None or self.last_answer is None:
            return None
        return max(0.0, now - self.last_answer.wall_time)

    def hud_lines(self, now: float, inference_state: InferenceState = InferenceState.ONLINE) -> List[str]:
        cap = self.capture
        source = f"source {self._capture_rate.per_second(now):.1f} fps"
        if self.source_rate:
            source += f" (nominal {self.source_rate:.1f})"
        age = self.detection_age(now)
        motion = self.motion
        return [
            f"display {self._display_rate.per_second(now):.1f} fps | {source}",
            f"detections {self._result_rate.per_second(now):.2f}/s | skipped for inference {self.skipped_now}"
            + ("" if motion is None else f" ({self.stats.skipped_still} still) | {'MOTION' if motion else 'still'}"),
            f"frame age {self.frame_age * 1000:.0f} ms | detections age "
            + (f"{age * 1000:.0f} ms ({len(self.last_detections)})" if age is not None else "-")
            if self.frame_age is not None else "frame age -",
            f"camera {cap.state} | inference {inference_state}"
            + (f" | reconnects {cap.reconnects}" if cap.reconnects else ""),
        ] + self._recording_lines()

    def _recording_lines(self) -> List[str]:
        """A HUD line when the recording is in trouble (the disk filled, the folder went away)."""
        status = self.recording()
        if status is None or status.state is RecordingState.RECORDING:
            return []
        return [status.line()]

    def banner(self, now: float, inference_state: InferenceState = InferenceState.ONLINE) -> Optional[str]:
        cap = self.capture
        down = cap.down_reason  # "OFFLINE: connection refused, retrying in 8 s", "given up: ..."
        if down is not None:
            return down
        if cap.state is CaptureState.CONNECTING:
            return "connecting..."
        if cap.last_frame_time is not None and now - cap.last_frame_time > 2.0 and cap.state is CaptureState.LIVE:
            return f"NO FRAMES FOR {now - cap.last_frame_time:.0f} s"
        if cap.state is CaptureState.STOPPED and self.ended and self.stats.captured:
            return "ENDED"
        if inference_state is not InferenceState.ONLINE:
            return "INFERENCE OFFLINE"
        return None

    def view(self, now: float, inference_state: InferenceState) -> View:
        """What a display shows of this camera now."""
        state = _VIEW_STATES[self.capture.state]
        if state is ViewState.ENDED and not self.ended:
            state = ViewState.UP  # stopping, with frames still to show
        if state is ViewState.CONNECTING and self.capture.last_reason is not None:
            state = ViewState.OFFLINE  # its first connection failed: retrying
        age = self.detection_age(now)
        figures = {
            "display_fps": self._display_rate.per_second(now),
            "source_fps": self._capture_rate.per_second(now),
            "detections_per_s": self._result_rate.per_second(now),
            "frame_age_s": self.frame_age,
            "detection_age_s": age,
            "skipped": float(self.skipped_now),
            "reconnects": float(self.capture.reconnects),
            "motion": None if self.motion is None else float(self.motion),
        }
        fresh, self._fresh = self._fresh, False
        events = self.events
        return View(name=self.name, image=self._displayed(), state=state,
                    hud=tuple(self.hud_lines(now, inference_state)), banner=self.banner(now, inference_state),
                    frame=self.last_frame, fresh=fresh, figures=figures, detections=self.last_detections,
                    outputs=self.outputs, recording=self.recording(), counts=None if events is None or not events.regions else events.counts(),
                    events=() if events is None else events.recent(), event_outputs=tuple(self.event_outputs()))

    def _displayed(self) -> Optional[np.ndarray]:
        """The newest drawn image with the overlays (drawn once per new image)."""
        image = self.last_image
        if image is None or not self.overlays:
            return image
        if self._overlaid is None or self._overlaid[0] is not image:
            self._overlaid = (image, overlay(image, self.last_detections, self.overlays))
        return self._overlaid[1]

    def status(self, now: float, every: float, inference_state: InferenceState) -> Optional[str]:
        """One status line about the last `every` seconds, when they have passed."""
        iv = self._interval
        if not every or now - iv.start < every:
            return None
        span = now - iv.start
        shown, inferred = self.stats.shown - iv.shown0, self.stats.inferred - iv.inferred0
        age = f"frame age {p50_p95(iv.ages)}" if iv.ages else "no frames"
        result_age = (f", detections {np.median(iv.result_ages) * 1000:.0f} ms old on arrival"
                      if iv.result_ages else "")
        self._interval = _Interval(now, self.stats.shown, self.stats.inferred)
        down = self.capture.down_reason
        recording = self.recording()
        trouble = f", {recording.line()}" if recording is not None and recording.state is not RecordingState.RECORDING else ""
        return (f"[{now - self.stats.started:.0f} s] display {shown / span:.1f} fps, detections "
                f"{inferred / span:.2f}/s, {age}{result_age}, skipped for inference {self.skipped_now}, "
                f"camera {self.capture.state}, inference {inference_state}" + (f" ({down})" if down else "") + trouble)

    def finish(self, inference_reconnects: int) -> LiveStats:
        """Close the counts once the capture and inference threads are done."""
        stats = self.stats
        self.collect()
        for _ in self.stages.flush():  # the stages' end (every tracked object's event ends)
            pass
        stats.finished = time.monotonic()
        stats.skipped = self.slot.skipped + stats.not_offered + (stats.taken - stats.inferred - stats.failed)
        if stats.motion_frames is None and self.motion is not None:
            stats.motion_frames = 0
        stats.reconnects = self.capture.reconnects
        stats.offline = self.capture.offline_seconds
        stats.camera_state = self.capture.state
        stats.camera_error = self.capture.error
        stats.given_up = self.capture.down_reason if self.capture.state is CaptureState.FAILED else None
        stats.server_reconnects = inference_reconnects
        stats.cut_at_exit = stats.captured - stats.shown - stats.dropped_display  # still queued at the end
        stats.recording = self.recording()
        return stats


class InferenceScheduler:
    """One inference stream shared by every camera.

    Each free request slot goes to the camera served least recently among those holding a
    frame not yet inferred (ties: the older frame first), so cameras of different frame
    rates get the same refresh rate and a camera that is down takes nothing. Frames are
    re-numbered for the stream (camera frame indexes collide) and results routed back.
    """

    def __init__(self, feeds: Sequence[CameraFeed], inference: Inference, wake: threading.Event):
        self.feeds = list(feeds)
        self.inference = inference
        self.wake = wake
        self.error: List[BaseException] = []
        self._stop = threading.Event()
        self._routes: Dict[int, Tuple[CameraFeed, Frame]] = {}
        self._seq = 0
        self._thread: Optional[threading.Thread] = None
        self._pending = threading.Event()  # set when any camera puts a frame in its slot

    def pick(self) -> Optional[CameraFeed]:
        """The camera whose newest frame goes next (None: no camera has one)."""
        waiting = [(f, f.slot.peek()) for f in self.feeds]
        waiting = [(f, frame) for f, frame in waiting if frame is not None]
        if not waiting:
            return None
        never = float("-inf")
        feed, _ = min(waiting, key=lambda fw: (fw[0].last_served if fw[0].last_served is not None else never,
                                               fw[1].wall_time))
        return feed

    def _frames(self) -> Iterator[Frame]:
        while not self._stop.is_set():
            feed = self.pick()
            frame = feed.slot.get(timeout=0) if feed is not None else None
            if frame is None:
                self._pending.wait(IDLE_WAIT)
                self._pending.clear()
                yield IDLE  # nothing new: the stream releases answers meanwhile
                continue
            feed.last_served = time.monotonic()
            feed.stats.taken += 1
            self._seq += 1
            self._routes[self._seq] = (feed, frame)
            yield replace(frame, index=self._seq)

    def _run(self) -> None:
        try:
            for outcome in self.inference.process(self._frames()):
                feed, frame = self._routes.pop(outcome.frame.index)
                feed.deliver(replace(outcome, frame=frame))
        except BaseException as err:  # handed to the main thread
            self.error.append(err)
            self.wake.set()

    def start(self) -> None:
        for feed in self.feeds:
            feed.slot.notify = self._pending.set
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.inference.abort()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


@dataclass
class LivePipeline:
    """The live scheduler: live cameras, one inference, their sinks and the displays.

    The main thread draws and records every captured frame of every camera and shows every
    camera's view on each display (one camera with its HUD, or a mosaic; a web page)."""

    feeds: Sequence[CameraFeed]
    inference: Inference
    displays: Sequence[Display] = ()
    status_every: float = 0.0  # seconds between status lines on the log (0: none)
    log: Callable[[str], None] = print
    wake: threading.Event = field(default_factory=threading.Event)
    connect: bool = True  # the capture threads open their sources (a failure there is a drop)
    event_outputs: Callable[[], Sequence] = lambda: ()  # the event outputs' statuses (a status line)

    def __post_init__(self):
        self.quit = False
        self.interrupted = False

    @property
    def single(self) -> bool:
        return len(self.feeds) == 1

    def _log_status(self, now: float) -> None:
        from .events.outputs import status_line

        state = self.inference.state
        logged = False
        for feed in self.feeds:
            line = feed.status(now, self.status_every, state)
            if line:
                logged = True
                self.log(line if self.single else f"{feed.name}: {line}")
        outputs = status_line(self.event_outputs()) if logged else None
        if outputs:
            self.log(outputs)

    def _step(self) -> bool:
        """Draw, record and show what the cameras captured. False: a viewer asked to stop."""
        for feed in self.feeds:
            feed.show_waiting()
        if not self.displays:
            return True
        now = time.monotonic()
        state = self.inference.state
        views = [feed.view(now, state) for feed in self.feeds]
        keep_going = True
        for display in self.displays:
            keep_going = display.show(views) and keep_going
        return keep_going

    def run(self) -> List[LiveStats]:
        scheduler = InferenceScheduler(self.feeds, self.inference, self.wake)
        for feed in self.feeds:
            feed.wake = self.wake
            feed.capture.start(feed.emit, connect=self.connect)
        scheduler.start()
        try:
            while True:
                self.wake.wait(0.05)
                self.wake.clear()
                for feed in self.feeds:
                    feed.collect()
                self._log_status(time.monotonic())
                if scheduler.error:
                    break
                if not self._step():
                    self.quit = True
                    break
                if all(feed.ended for feed in self.feeds):
                    break
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            for feed in self.feeds:
                feed.capture.stop()
                feed.slot.close()
            scheduler.stop()
            for feed in self.feeds:
                feed.frames.cancel()
                feed.capture.join(timeout=15)
            scheduler.join(timeout=15)
            results = [feed.finish(self.inference.reconnects) for feed in self.feeds]
            for stats in results:
                stats.quit, stats.interrupted = self.quit, self.interrupted
        if scheduler.error:
            raise scheduler.error[0]
        return results


def total_line(stats: Sequence[LiveStats]) -> str:
    """The run's total over several cameras, in the per-camera line's style."""
    total = LiveStats(started=min(s.started for s in stats))
    for s in stats:
        for name in ("captured", "shown", "dropped_display", "cut_at_exit", "taken", "inferred", "failed",
                     "skipped", "skipped_every", "skipped_still", "reconnects", "offline", "server_reconnects"):
            setattr(total, name, getattr(total, name) + getattr(s, name))
        total.ages.extend(s.ages)
        for latency in s.latency.recent():
            total.latency.observe(latency)
    total.server_reconnects = max(s.server_reconnects for s in stats)
    total.finished = max(s.finished or time.monotonic() for s in stats)
    return total.line()
