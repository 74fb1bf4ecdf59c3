"""Wire the stages for a file: source thread -> bounded queue -> inference -> render -> sinks.

Data flows one way. The reader thread decodes into a bounded queue (blocking when full:
nothing is lost); the main thread streams frames to Triton and gets them back in frame
order; each frame is drawn and handed to every sink. A frame whose inference failed is
still written, unannotated, and counted. Ctrl-C stops reading; what was written stays.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, Optional, Protocol, Sequence

import numpy as np

from . import interrupts
from .frame_queue import FrameQueue
from .frames import Detections, Frame
from .metrics import LatencyHistogram
from .triton import InferenceStream, Outcome
from .window import UserQuit


def p50_p95(seconds: Sequence[float]) -> str:
    """"p50 X ms p95 Y ms" of durations given in seconds (not empty)."""
    p50, p95 = np.percentile(np.asarray(seconds), [50, 95]) * 1000
    return f"p50 {p50:.0f} ms p95 {p95:.0f} ms"


FILE_WINDOW = 200_000  # latencies kept for a file run's p50/p95 (1.6 MB)


class Sink(Protocol):
    def write(self, frame: Frame, image: np.ndarray, detections: Optional[Detections]) -> None: ...


class Source(Protocol):
    problem: Optional[str]

    def frames(self) -> Iterator[Frame]: ...


@dataclass
class RunStats:
    read: int = 0  # frames that entered inference
    inferred: int = 0
    written: int = 0
    failed: int = 0
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
    pool: Optional[object] = None  # several servers: PoolStats (frames each server took, frames moved)
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
        if self.dropped:
            counts += f", dropped {self.dropped} ({'window closed' if self.quit else 'interrupted'})"
        parts = [counts, f"{self.fps:.2f} fps"]
        if self.latency.count:
            parts.append(f"latency {p50_p95(self.latency.recent())}")
        if self.server_compute is not None:
            parts.append(f"server {self.server_compute * 1000:.0f} ms/frame")
        if self.reconnects:
            parts.append(f"reconnects {self.reconnects}")
        if self.pool is not None:
            taken = ", ".join(f"{url} {n}" for url, n in self.pool.taken.items())
            parts.append(f"servers {taken}; moved {self.pool.moved}")
        return " | ".join(parts)

    @property
    def complete(self) -> bool:
        return not (self.failed or self.source_problem or self.interrupted)

    def count(self, outcome: Outcome) -> None:
        if outcome.ok:
            self.inferred += 1
            if outcome.latency is not None:
                self.latency.observe(outcome.latency)
        else:
            self.failed += 1
            self.first_error = self.first_error or outcome.error


Annotate = Callable[[Frame, Detections], np.ndarray]
Select = Callable[[Detections], Detections]


@dataclass
class FilePipeline:
    source: Source
    inference: InferenceStream
    select: Select  # threshold and class filter: what is drawn and recorded
    annotate: Annotate  # draws the selected detections on a copy of the frame
    sinks: Sequence[Sink]
    max_frames: Optional[int] = None
    queue_size: int = 8
    on_frame: Callable[[RunStats], None] = lambda stats: None

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

    def run(self) -> RunStats:
        stats = self.stats
        frames: FrameQueue[Frame] = FrameQueue(self.queue_size)
        errors: list = []
        reader = threading.Thread(target=self._read, args=(frames, errors), name="reader", daemon=True)
        reader.start()
        try:
            for outcome in self.inference.process(self._taken(frames, stats)):
                stats.count(outcome)
                image = outcome.frame.image
                detections = None
                if outcome.ok:
                    detections = self.select(outcome.detections)
                    image = self.annotate(outcome.frame, detections)
                    for label in detections.labels:
                        stats.detections_by_class[int(label)] = stats.detections_by_class.get(int(label), 0) + 1
                with interrupts.critical():  # each frame goes to every sink whole, or not at all
                    for sink in self.sinks:
                        try:
                            sink.write(outcome.frame, image, detections)
                        except UserQuit:  # the window is closed; the files still get this frame
                            stats.quit = True
                    stats.written += 1
                self.on_frame(stats)
                if stats.quit:
                    break
        except KeyboardInterrupt:
            stats.interrupted = True
        finally:
            frames.cancel()
            reader.join(timeout=10)
            stats.finished = time.monotonic()
            stats.reconnects = self.inference.reconnects
        if errors:
            raise errors[0]
        stats.source_problem = self.source.problem
        return stats
