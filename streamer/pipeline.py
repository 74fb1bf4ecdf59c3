"""The file scheduler: source thread -> bounded queue -> inference -> stages -> annotators -> sinks/displays.

Data flows one way. The reader thread decodes into a bounded queue (blocking when full:
nothing is lost); the main thread streams frames to inference and gets them back in frame
order; the stages pass them on in order; each frame is drawn and handed to every sink and
display. A frame whose inference failed is still written, unannotated, and counted. Ctrl-C
stops reading; what was written stays. A display that returns False (the window closed)
ends the run the same way. `streamer render` runs this scheduler with a log for inference.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, Optional, Sequence, Set, Tuple

import numpy as np

from . import interrupts
from .frame_queue import FrameQueue
from .frames import Detections, Frame, Outcome
from .metrics import LatencyHistogram
from .detlog import TRACKED
from .report import StreamReport, percentiles_ms
from .stages import Annotator, Display, Inference, ServerShare, Sink, Source, Stage, View
from .states import SkipReason, StreamKind, ViewState


def p50_p95(seconds: Sequence[float]) -> str:
    """"p50 X ms p95 Y ms" of durations given in seconds (not empty)."""
    p50, p95 = np.percentile(np.asarray(seconds), [50, 95]) * 1000
    return f"p50 {p50:.0f} ms p95 {p95:.0f} ms"


AGE = "age_s"  # a tracked box's column: seconds since its track's last detection (streamer.tracking.columns)
FILE_WINDOW = 200_000  # latencies kept for a file run's p50/p95 (1.6 MB)


@dataclass
class RunStats:
    read: int = 0  # frames that entered inference
    inferred: int = 0
    written: int = 0
    failed: int = 0
    tracked: int = 0  # frames the model did not see (--infer-every, --infer-on motion): boxes carried or interpolated
    skipped_by: Dict[SkipReason, int] = field(default_factory=dict)  # tracked frames by why the model did not see them
    motion_frames: Optional[int] = None  # frames that showed motion (None: no motion detector)
    # seconds from send to answer, per inferred frame (the whole run's values for p50/p95)
    latency: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(window=FILE_WINDOW))
    detections_by_class: Dict[int, int] = field(default_factory=dict)  # label id -> detections written
    started: float = field(default_factory=time.monotonic)
    finished: Optional[float] = None
    interrupted: bool = False
    quit: bool = False  # the user closed the --show window
    source_problem: Optional[str] = None
    first_error: Optional[str] = None
    server_compute: Optional[float] = None  # mean seconds per inference, from Triton's statistics
    servers: Tuple[ServerShare, ...] = ()  # several servers: the frames each answered (none: one server)
    moved: int = 0  # several servers: frames taken back from a server and given to another
    moved_slow: int = 0  # several servers: frames a slow server held too long, resent to another
    reconnects: int = 0

    @property
    def dropped(self) -> int:
        """Frames read but not written (only when interrupted)."""
        return self.read - self.written

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def fps(self) -> float:
        return self.written / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        counts = f"frames: read {self.read}, inferred {self.inferred}, written {self.written}, failed {self.failed}"
        if self.tracked:
            counts += f", tracked {self.tracked}" + skipped_split(self.skipped_by)
        if self.dropped:
            counts += f", dropped {self.dropped} ({'window closed' if self.quit else 'interrupted'})"
        parts = [counts, f"{self.fps:.2f} fps"]
        if self.latency.count:
            parts.append(f"latency {p50_p95(self.latency.recent())}")
        if self.server_compute is not None:
            parts.append(f"server {self.server_compute * 1000:.0f} ms/frame")
        if self.reconnects:
            parts.append(f"reconnects {self.reconnects}")
        if self.servers:
            taken = ", ".join(f"{share.url} {share.frames}" for share in self.servers)
            parts.append(f"servers {taken}; moved {self.moved}; moved for slowness {self.moved_slow}")
        return " | ".join(parts)

    @property
    def complete(self) -> bool:
        return not (self.failed or self.source_problem or self.interrupted)

    def report(self, name: str, name_of: Callable[[int], str]) -> StreamReport:
        """This file's part of the run report."""
        return StreamReport(
            name=name, kind=StreamKind.FILE,
            frames={"read": self.read, "inferred": self.inferred, "written": self.written, "failed": self.failed,
                    "dropped": self.dropped, "tracked": self.tracked},
            fps=self.fps, latency_ms=percentiles_ms(self.latency.recent()),
            detections_by_class=by_name(self.detections_by_class, name_of), reconnects=self.reconnects,
            skipped_by_reason=reasons_json(self.skipped_by, (SkipReason.EVERY, SkipReason.STILL)),
            motion=None if self.motion_frames is None else {
                "frames": self.motion_frames, "share": round(self.motion_frames / max(1, self.read), 4)})

    def count(self, outcome: Outcome) -> None:
        if outcome.ok:
            self.inferred += 1
            if outcome.latency is not None:
                self.latency.observe(outcome.latency)
        elif outcome.error is None:  # not sent to the model (--infer-every, --infer-on motion)
            self.tracked += 1
            reason = outcome.skipped or SkipReason.EVERY
            self.skipped_by[reason] = self.skipped_by.get(reason, 0) + 1
        else:
            self.failed += 1
            self.first_error = self.first_error or outcome.error


def skipped_split(counts: Dict[SkipReason, int]) -> str:
    """" (still 450, every 10)": the reasons frames were not inferred, once motion kept some from the
    model (the line stays as it was otherwise)."""
    if not counts.get(SkipReason.STILL):
        return ""
    return " (" + ", ".join(f"{reason} {counts[reason]}" for reason in SkipReason if counts.get(reason)) + ")"


def reasons_json(counts: Dict[SkipReason, int], reasons) -> Dict[str, int]:
    """The report's `skipped_by_reason`: every reason the run can have, 0 where none."""
    return {str(reason): int(counts.get(reason, 0)) for reason in reasons}


def by_name(counts: Dict[int, int], name_of: Callable[[int], str]) -> Dict[str, int]:
    """Per-class counts keyed by class name (ids that share a name are added up)."""
    named: Dict[str, int] = {}
    for label, n in list(counts.items()):
        named[name_of(label)] = named.get(name_of(label), 0) + n
    return named


def count_labels(counts: Dict[int, int], detections: Optional[Detections]) -> None:
    """Add what is drawn to the per-class counts (label id -> detections)."""
    if detections is not None:
        for label in detections.labels:
            counts[int(label)] = counts.get(int(label), 0) + 1


def overlay(image: np.ndarray, detections: Optional[Detections], overlays: Sequence[Annotator]) -> np.ndarray:
    """The picture with what only displays show (zones and lines with their counts), drawn whatever
    the detections (None or empty: still drawn)."""
    for annotator in overlays:
        image = annotator.annotate(image, detections if detections is not None else Detections.empty())
    return image


def draw(image: np.ndarray, detections: Optional[Detections], annotators: Sequence[Annotator]) -> np.ndarray:
    """The picture with every annotator's drawing (the frame's own image when nothing is held)."""
    if detections is None:
        return image
    for annotator in annotators:
        image = annotator.annotate(image, detections)
    return image


@dataclass
class FilePipeline:
    """The lossless scheduler: every frame of the source, in order, through inference, the stages,
    the annotators, to every sink and display."""

    source: Source
    inference: Inference
    stages: Stage  # the selection chain (selection.selection_stages)
    annotators: Sequence[Annotator]
    sinks: Sequence[Sink]
    displays: Sequence[Display] = ()
    max_frames: Optional[int] = None
    queue_size: int = 8
    on_frame: Callable[[RunStats], None] = lambda stats: None
    name: str = ""  # the view's name on a display
    total: Optional[int] = None  # frames expected (a display's "frame k/total")
    overlays: Sequence[Annotator] = ()  # drawn for the displays only (zones and lines)
    events: Optional[object] = None  # the event stage (counts and recent events for the displays)
    event_outputs: Callable[[], Sequence] = lambda: ()  # the event outputs' statuses
    # after a frame is written while the stages hold nothing back (a resumable run's checkpoints)
    on_settled: Callable[[Frame], None] = lambda frame: None

    def _read(self, frames: FrameQueue, errors: list) -> None:
        try:
            for n, frame in enumerate(self.source.frames()):
                if self.max_frames is not None and n >= self.max_frames:
                    break
                if not frames.put(frame):
                    break  # the consumer is gone
        except BaseException as err:  # handed to the main thread
            errors.append(err)
        finally:
            frames.close()

    def _taken(self, frames: FrameQueue, stats: RunStats) -> Iterator[Frame]:
        for frame in frames:
            stats.read += 1
            yield frame

    def __post_init__(self):
        self.stats = RunStats()  # read by the metrics endpoint while the run goes on
        self._last_view: Optional[View] = None
        self._failed: Set[int] = set()  # frames whose inference failed: written unannotated, whatever a stage fills
        self._pushed = 0  # frames given to the stages (the others are held by them)

    def _view(self, frame: Frame, image: np.ndarray, detections: Optional[Detections]) -> View:
        stats = self.stats
        elapsed = stats.elapsed
        fps = stats.written / elapsed if elapsed > 0 else 0.0
        position = f"frame {frame.index + 1}" + (f"/{self.total}" if self.total else "")
        if detections is None:
            status = "no detections (inference failed)"
        elif TRACKED in detections.data:
            ages = detections.data.get(AGE)
            age = f", inferred {float(np.max(ages)) * 1000:.0f} ms before" if ages is not None and len(ages) else ""
            status = f"{len(detections)} tracked box(es){age}"
        else:
            status = f"{len(detections)} detection(s)"
        events = self.events
        return View(name=self.name, image=overlay(image, detections, self.overlays),
                    hud=(position, f"display {fps:.1f} fps", status), frame=frame,
                    figures={"display_fps": fps}, detections=detections,
                    counts=None if events is None or not events.regions else events.counts(),
                    events=() if events is None else events.recent(), event_outputs=tuple(self.event_outputs()))

    def _emit(self, frame: Frame, detections: Optional[Detections]) -> bool:
        """Draw one released frame, write it to every sink and show it. False: a display asked to stop."""
        stats = self.stats
        if frame.index in self._failed:
            self._failed.discard(frame.index)
            detections = None
        image = draw(frame.image, detections, self.annotators)
        count_labels(stats.detections_by_class, detections)
        with interrupts.critical():  # each frame goes to every sink whole, or not at all
            for sink in self.sinks:
                sink.write(frame, image, detections)
            stats.written += 1
        self.on_frame(stats)
        keep_going = True
        if self.displays:
            view = self._view(frame, image, detections)
            self._last_view = view
            for display in self.displays:
                keep_going = display.show([view]) and keep_going
        return keep_going

    def _show_end(self) -> None:
        """Tell the displays the file has ended (a web page says so; a window keeps its last frame)."""
        last = self._last_view
        if last is None or not self.displays:
            return
        ended = View(name=last.name, image=last.image, state=ViewState.ENDED, hud=last.hud, banner="ENDED",
                     frame=last.frame, fresh=False, figures=last.figures, detections=last.detections,
                     counts=last.counts, events=last.events, event_outputs=tuple(self.event_outputs()))
        for display in self.displays:
            display.show([ended])

    def run(self) -> RunStats:
        stats = self.stats
        frames: FrameQueue[Frame] = FrameQueue(self.queue_size)
        errors: list = []
        reader = threading.Thread(target=self._read, args=(frames, errors), name="reader", daemon=True)
        reader.start()
        try:
            for outcome in self.inference.process(self._taken(frames, stats)):
                stats.count(outcome)
                if outcome.error is not None:
                    self._failed.add(outcome.frame.index)
                self._pushed += 1
                for frame, detections in self.stages.push(outcome.frame, outcome.detections):
                    if not self._emit(frame, detections):
                        stats.quit = True
                if stats.quit:
                    break
                if stats.written == self._pushed and not self._failed:
                    self.on_settled(outcome.frame)
            for frame, detections in self.stages.flush():
                self._emit(frame, detections)
            self._show_end()
        except KeyboardInterrupt:
            stats.interrupted = True
            with interrupts.critical():  # what a stage holds is written too
                for frame, detections in self.stages.flush():
                    self._emit(frame, detections)
        finally:
            frames.cancel()
            reader.join(timeout=10)
            stats.finished = time.monotonic()
            stats.reconnects = self.inference.reconnects
        if errors:
            raise errors[0]
        stats.source_problem = self.source.problem
        return stats
