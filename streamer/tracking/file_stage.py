"""The tracker stage of a file run with `--infer-every N`: ids on inferred frames, boxes between.

Frames come in order; an inferred frame carries the model's detections, the others None. After
an inferred frame A the stage holds the frames that follow until the next inferred frame B
arrives, then releases them in order, with for every track active at A:

- matched at B too: its box **interpolated** between its boxes at A and B by media time:
  along the optical flow's path, its end error spread in proportion of time, where flow held
  all the way and arrived near the box at B (it follows turns), else linearly;
- not matched at B: its box carried by optical flow from A (Kalman motion where flow fails), on
  at most `carry_frames` frames after A (default N), then no more;
- a track first seen (or found again) at B is not drawn before B.

On A and B themselves the released detections are the model's own, with `track_ids` added
(never moved, dropped or invented: the fidelity rule). A scene cut ends every track: frames before
it are released with their carried boxes, nothing is interpolated across it, and the frames
after it get boxes only from the next inferred frame on (the schedule infers the first frame of
each shot, see `streamer.policy.InferPolicy`).

Memory: held frames are counted in bytes (their pictures; their grey copies for flow are not
kept); past `memory_cap` bytes the oldest are released early with their flow-carried boxes (a 4K
clip at N = 30 would otherwise hold 750 MB). `flush()` releases everything held the same way.

With N = 1 (every frame inferred) nothing is held and no flow runs: a frame whose inference
failed waits for the next answer and gets interpolated boxes (or Kalman-carried ones at the end).

A released frame the model did not see carries Detections made by the stage (possibly empty),
marked as `columns` says (TRACKED, ESTIMATE, AGE): the boxes on inferred frames are exact, the
rest are estimates. The frame's inference may also have failed (the stage cannot tell a failed
frame from one not sent): the scheduler, which knows, writes `failed` for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..frames import Detections, Frame
from ..stages import Released
from .bytetrack import Tracker
from .carry import carry_tracks, visible
from .assign import iou_matrix
from .columns import FLOW, INTERPOLATED, Made, tracked_detections
from .cuts import CutDetector
from .flow import Flow, Grey
from ..grey import grey_of

DEFAULT_MEMORY_CAP = 256 * 1024 * 1024
FALLBACK_FPS = 30.0
FOLLOW_MIN_IOU = 0.5  # flow must have arrived this close to the next detection to guide interpolation  # media time of a frame without a timestamp: index / FALLBACK_FPS


def media_time(frame: Frame) -> float:
    """A file frame's time in seconds: its timestamp (index / FALLBACK_FPS without one)."""
    t = frame.time
    return float(t) if t is not None else frame.index / FALLBACK_FPS


@dataclass
class _Anchor:
    """The last inferred frame: its time, index and its active tracks (id -> label, score, box)."""

    time: float
    index: int
    tracks: Dict[int, Tuple[int, float, np.ndarray]]


@dataclass
class _Held:
    frame: Frame
    time: float
    after_anchor: int  # frames since the anchor (1 = the next frame)
    carried: Dict[int, Tuple[np.ndarray, str]] = field(default_factory=dict)  # id -> (box, how)

    @property
    def nbytes(self) -> int:
        return self.frame.image.nbytes


class FileTracker:
    """A `Stage` for file runs (see the module docstring).

    infer_every: N, the run's `--infer-every` (carry_frames defaults to it).
    carry_frames: a track not matched at the next inferred frame is carried this many frames
        after the last one it was seen on (float("inf"): until that next inferred frame, as with
        `--infer-on motion`, where the frames between are still ones).
    sparse: the model does not see every frame, so flow runs (None: infer_every > 1).
    threshold: the run's score threshold (the tracker's high/low split, see `Tracker`).
    memory_cap: bytes of held frames beyond which the oldest are released early.
    tracker, flow, cuts: the parts, for tests and tuning (defaults: Tracker(threshold), Flow(),
        CutDetector() - the same cut settings as the run's InferPolicy).
    flow_width: flow runs on grey frames at most this wide.
    follow_flow: interpolate along the flow's path where flow held all the way (else linearly).
    clock: a frame's time in seconds (media time).
    """

    def __init__(self, infer_every: int, threshold: float = 0.5, memory_cap: int = DEFAULT_MEMORY_CAP,
                 carry_frames: Optional[float] = None, tracker: Optional[Tracker] = None, flow: Optional[Flow] = None,
                 cuts: Optional[CutDetector] = None, flow_width: int = 640, follow_flow: bool = True,
                 clock: Callable[[Frame], float] = media_time, sparse: Optional[bool] = None):
        if infer_every < 1:
            raise ValueError(f"infer_every must be >= 1, got {infer_every}")
        self.infer_every = infer_every
        self.carry_frames = infer_every if carry_frames is None else carry_frames
        self.sparse = infer_every > 1 if sparse is None else sparse
        self.memory_cap = memory_cap
        self.tracker = tracker or Tracker(threshold=threshold)
        self.flow = flow or Flow()
        self.cuts = cuts or CutDetector()
        self.flow_width = flow_width
        self.follow_flow = follow_flow
        self.clock = clock
        self.anchor: Optional[_Anchor] = None
        self.held: List[_Held] = []
        self.held_bytes = 0
        self.peak_bytes = 0  # the most held at once (for reports and tests)
        self.early = 0  # frames released early because of the memory cap
        self._previous: Optional[Tuple[Optional[Grey], float]] = None
        self._after_anchor = 0
        self._how: Dict[int, str] = {}

    # -- the Stage interface ---------------------------------------------------------------
    def push(self, frame: Frame, detections: Optional[Detections]) -> Iterator[Released]:
        time = self.clock(frame)
        # With every frame inferred, a box is carried only over a failed inference: the Kalman
        # model does it and the flow's grey copies are not made (the cut test reads the frame).
        grey = grey_of(frame, self.flow_width) if self.sparse else None
        released: List[Released] = []
        if self.cuts.update_frame(frame, self.flow_width) if self.sparse else self.cuts.update(frame.image):
            released += self._release_held()
            self.tracker.clear()
            self.anchor = None
        elif self._previous is not None and self.anchor is not None:
            before, t_before = self._previous
            self._how = carry_tracks(self.flow, self.tracker.active(), before, grey, t_before, time, self._how)
        self._previous = (grey, time)
        if detections is not None:
            released += self._inferred(frame, detections, time)
        elif self.anchor is None or not self.anchor.tracks:
            released += self._release_held()
            released.append((frame, tracked_detections([])))
        else:
            self._hold(frame, time)
            released += self._over_cap()
        return iter(released)

    def answer(self, frame: Frame, detections: Optional[Detections]) -> Optional[Detections]:
        """Files have no late answers: every answer comes with its frame through push()."""
        return detections

    def flush(self) -> Iterator[Released]:
        """Release every held frame with its carried boxes (the end of the run, or Ctrl-C)."""
        return iter(self._release_held())

    def reset(self) -> None:
        """Forget every track (frames held stay held: flush() releases them)."""
        self.tracker.clear()

    @property
    def tracks_active(self) -> int:
        return len(self.tracker.active())

    # -- inside ----------------------------------------------------------------------------
    def _inferred(self, frame: Frame, detections: Detections, time: float) -> List[Released]:
        arrived = {t.id: (t.box.copy(), self._how.get(t.id)) for t in self.tracker.active() if t.box_time == time}
        ids = self.tracker.update(detections, time, frame.index)
        matched = {int(i): row for row, i in enumerate(ids) if i >= 0}
        released = [(h.frame, self._interpolated(h, detections, matched, arrived, time)) for h in self.held]
        self.held, self.held_bytes = [], 0
        released.append((frame, detections.replace(track_ids=ids)))
        self.anchor = _Anchor(time, frame.index, {t.id: (t.label, t.score, t.box.copy()) for t in self.tracker.active()})
        self._after_anchor = 0
        self._how = {}
        return released

    def _hold(self, frame: Frame, time: float) -> None:
        self._after_anchor += 1
        held = _Held(frame, time, self._after_anchor,
                     {t.id: (t.box.copy(), self._how.get(t.id, "")) for t in self.tracker.active()})
        self.held.append(held)
        self.held_bytes += held.nbytes

    def _over_cap(self) -> List[Released]:
        released = []
        while self.held and self.held_bytes > self.memory_cap:
            held = self.held.pop(0)
            self.held_bytes -= held.nbytes
            self.early += 1
            released.append((held.frame, self._carried(held)))
        self.peak_bytes = max(self.peak_bytes, self.held_bytes)
        return released

    def _release_held(self) -> List[Released]:
        released = [(h.frame, self._carried(h)) for h in self.held]
        self.held, self.held_bytes = [], 0
        return released

    def _carried(self, held: _Held) -> Detections:
        """A held frame's boxes from flow alone (no later inferred frame to interpolate to)."""
        rows = []
        if self.anchor is not None and held.after_anchor <= self.carry_frames:
            for track_id, (box, how) in held.carried.items():
                rows += self._row(held, track_id, box, how)
        return tracked_detections(rows)

    def _interpolated(self, held: _Held, detections: Detections, matched: Dict[int, int],
                      arrived: Dict[int, Tuple[np.ndarray, Optional[str]]], time: float) -> Detections:
        """A held frame's boxes once the next inferred frame (at `time`) is known. `arrived`:
        where flow had carried each track by that frame, and how."""
        anchor = self.anchor
        rows = []
        span = time - anchor.time
        fraction = (held.time - anchor.time) / span if span > 0 else held.after_anchor / (held.after_anchor + 1)
        for track_id, (box, how) in held.carried.items():
            if track_id in matched:
                start = anchor.tracks[track_id][2]
                end = detections.boxes[matched[track_id]].astype(np.float64)
                rows += self._row(held, track_id, self._between(start, end, fraction, box, how,
                                                                arrived.get(track_id)), INTERPOLATED)
            elif held.after_anchor <= self.carry_frames:
                rows += self._row(held, track_id, box, how)
        return tracked_detections(rows)

    def _between(self, start: np.ndarray, end: np.ndarray, fraction: float, carried: np.ndarray, how: str,
                 arrived: Optional[Tuple[np.ndarray, Optional[str]]]) -> np.ndarray:
        """A box between a track's boxes at the two inferred frames. Linear in time; or, when
        `follow_flow` and flow carried the track all the way and arrived near its detection, the
        flow's path with its end error spread in proportion of time (exact at both ends, and it
        follows a turn)."""
        if (self.follow_flow and how == FLOW and arrived is not None and arrived[1] == FLOW
                and iou_matrix(arrived[0][None], end[None])[0, 0] >= FOLLOW_MIN_IOU):
            return carried + (end - arrived[0]) * fraction
        return start + (end - start) * fraction

    def _row(self, held: _Held, track_id: int, box: np.ndarray, how: str) -> List[Made]:
        label, score, _ = self.anchor.tracks[track_id]
        h, w = held.frame.image.shape[:2]
        shown = visible(box, w, h)
        if shown is None:
            return []
        return [Made(track_id, shown, label, score, how, held.time - self.anchor.time)]
