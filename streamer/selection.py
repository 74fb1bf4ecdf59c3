"""The stages every run has: what is drawn and recorded, and how long live boxes are held.

The class filter runs first and the score threshold (with the rounding the log keeps) last, so
stages in between (a tracker) still see the low-score boxes. File runs, live runs and `render`
build the same chain (`selection_stages`), so a log redrawn by `render` is filtered exactly as
the run was.
"""

from __future__ import annotations

from typing import Callable, Iterator, List, Optional, Sequence

from .frames import Detections, Frame
from .stages import PassStage, Released, Stage


class ClassFilter(PassStage):
    """Only the detections of these COCO label ids (None keeps all)."""

    def __init__(self, label_ids: Optional[Sequence[int]]):
        self.label_ids = None if label_ids is None else list(label_ids)

    def _keep(self, detections: Optional[Detections]) -> Optional[Detections]:
        return None if detections is None else detections.with_labels(self.label_ids)

    def push(self, frame: Frame, detections: Optional[Detections]) -> Iterator[Released]:
        yield frame, self._keep(detections)

    def answer(self, frame: Frame, detections: Optional[Detections]) -> Optional[Detections]:
        return self._keep(detections)


class ScoreThreshold(PassStage):
    """Scores >= threshold, boxes and scores rounded as the JSONL log keeps them (what is drawn is
    what `streamer render` can redraw, down to the drawing order of equal scores)."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def _keep(self, detections: Optional[Detections]) -> Optional[Detections]:
        return None if detections is None else detections.above(self.threshold).quantized()

    def push(self, frame: Frame, detections: Optional[Detections]) -> Iterator[Released]:
        yield frame, self._keep(detections)

    def answer(self, frame: Frame, detections: Optional[Detections]) -> Optional[Detections]:
        return self._keep(detections)


class HoldDetections(PassStage):
    """Live: each shown frame gets the newest answer while it is recent enough.

    An answer arrives after its own frame was shown, so it is drawn on the first frame shown
    after it arrived, whatever its age, and then on the frames captured within `hold` seconds of
    its own (0: on that first frame only; None: 3 x the recent inference latency, at least 2 s —
    `latency()` gives recent latencies)."""

    def __init__(self, hold: Optional[float], latency: Callable[[], Sequence[float]] = lambda: ()):
        self.hold = hold
        self.latency = latency
        self.latest: Optional[tuple] = None  # (frame the answer is for, its detections)
        self.unshown = False  # the latest answer was not drawn yet

    def limit(self) -> float:
        if self.hold is not None:
            return self.hold
        recent = sorted(self.latency())
        if not recent:
            return 2.0
        mid = len(recent) // 2
        median = recent[mid] if len(recent) % 2 else (recent[mid - 1] + recent[mid]) / 2
        return max(2.0, 3 * median)

    def push(self, frame: Frame, detections: Optional[Detections]) -> Iterator[Released]:
        if detections is not None:  # the frame's own answer (not live)
            yield frame, detections
            return
        latest = self.latest
        if latest is None:
            yield frame, None
        elif self.unshown or frame.wall_time - latest[0].wall_time <= self.limit():
            self.unshown = False
            yield frame, latest[1]
        else:
            yield frame, None

    def answer(self, frame: Frame, detections: Optional[Detections]) -> Optional[Detections]:
        if detections is not None:
            self.latest, self.unshown = (frame, detections), True
        return detections

    def reset(self) -> None:
        self.latest, self.unshown = None, False


class Chain(PassStage):
    """Stages one after another, as one stage."""

    def __init__(self, stages: Sequence[Stage]):
        self.stages: List[Stage] = list(stages)

    def _through(self, items: Iterator[Released], start: int) -> Iterator[Released]:
        for frame, detections in items:
            yield from self._from(start, frame, detections)

    def _from(self, start: int, frame: Frame, detections: Optional[Detections]) -> Iterator[Released]:
        if start == len(self.stages):
            yield frame, detections
            return
        for out_frame, out_detections in self.stages[start].push(frame, detections):
            yield from self._from(start + 1, out_frame, out_detections)

    def push(self, frame: Frame, detections: Optional[Detections]) -> Iterator[Released]:
        return self._from(0, frame, detections)

    def answer(self, frame: Frame, detections: Optional[Detections]) -> Optional[Detections]:
        for stage in self.stages:
            detections = stage.answer(frame, detections)
        return detections

    def flush(self) -> Iterator[Released]:
        for i, stage in enumerate(self.stages):
            yield from self._through(stage.flush(), i + 1)

    def reset(self) -> None:
        for stage in self.stages:
            stage.reset()


def selection_stages(threshold: float, label_ids: Optional[Sequence[int]], middle: Sequence[Stage] = (),
                     after: Sequence[Stage] = ()) -> Chain:
    """The class filter, the stages in between (hold, tracker), the score threshold, then the
    stages that look at what is drawn (events)."""
    return Chain([ClassFilter(label_ids), *middle, ScoreThreshold(threshold), *after])
