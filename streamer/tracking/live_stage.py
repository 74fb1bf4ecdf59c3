"""The tracker stage of a live run: boxes carried forward onto every displayed frame.

`push(frame, None)` is called for every captured frame, in order, and returns that frame at
once with the boxes of the active tracks carried onto it (optical flow from the previous frame,
Kalman motion where flow fails). The model's answer for a frame pushed earlier comes later
through `answer(frame, detections)`: it is matched on the frame it was computed on (against
the boxes the tracks had on that frame), then the matched tracks are carried through the frames
captured since, so the next displayed frame shows them where they are now. `answer` returns the
model's own detections with `track_ids` added (what the live detections log writes).

Kept: a ring of recent frames (grey copy for flow, each track's box on it), trimmed to the
frames after the latest answered one, and to `ring_s` seconds and `ring_bytes` bytes, so memory
stays bounded when answers stop. Catching up after an answer takes at most `catchup_steps`
flow steps (skipping frames when the answer is older than that many frames).

Shown: the tracks matched by the latest answer (a lost track is kept for matching, not drawn),
for at most `max_carry_s` seconds after their last match (and on the first frame pushed after the
answer arrived, whatever its age: 0 shows each answer on that one frame), not counting the frames
the camera's inference policy kept from the model because nothing moved (`still`): with
`--infer-on motion` a parked car keeps its box and id for as long as the scene stays still, and
until an inference no longer sees it; boxes still vanish `max_carry_s` after inference was wanted
and did not answer (the server is down). A scene cut or `reset()` (a camera reconnects, a looping
file camera restarts) ends every track; ids are never reused.

Moving: whether a shown track's box, carried by optical flow, moves faster than `MOVING_SPEED`
box sizes a second (smoothed over about half a second): the inference policy offers frames
while a tracked object moves, even where the motion detector sees nothing (a masked region). An answer
for a frame captured before the cut or reset still gets ids (fresh ones, for the log) but
brings no track back. Answers are expected in frame order (the inference's reorder buffer).

Exact: the ids on the answered frame's own boxes. Estimated: every displayed box (carried).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, Iterator, List, Optional, Set, Tuple

import numpy as np

from ..frames import Detections, Frame
from ..stages import Released
from .bytetrack import NO_ID, Track, Tracker
from .carry import carry_tracks, visible
from .columns import FLOW, PREDICTED, Made, tracked_detections
from .cuts import CutDetector
from .flow import Flow, Grey
from ..grey import grey_of


MAX_CARRY_S = 2.0  # seconds a box is carried past its last match (frames kept still aside)
MOVING_SPEED = 0.25  # box sizes a second: a tracked object moving faster is moving
MOVING_SMOOTH_S = 0.5  # the time constant its speed is smoothed with


def capture_time(frame: Frame) -> float:
    """A live frame's time in seconds: when it was captured (uneven gaps are real)."""
    return frame.wall_time


@dataclass
class _Seen:
    """A recent frame: its index, time, grey copy, each shown track's box and how it got there, and
    the seconds of still frames (kept from the model: nothing moved) pushed up to it."""

    index: int
    time: float
    grey: Grey
    boxes: Dict[int, Tuple[np.ndarray, str]] = field(default_factory=dict)
    still_s: float = 0.0


class LiveTracker:
    """A `Stage` for live runs (see the module docstring).

    threshold: the run's score threshold (the tracker's high/low split, see `Tracker`).
    max_carry_s: a track's box is shown at most this long after its last match (still frames aside).
    still: whether the frame of this index was kept from the model because nothing moved (the
        camera's `policy.InferPolicy.held_still`; None: no frame was).
    ring_s, ring_bytes: the most recent frames kept for late answers (time, bytes).
    catchup_steps: the most flow steps an answer's catch-up takes.
    tracker, flow, cuts: the parts (defaults: Tracker(threshold), Flow(), CutDetector()).
    flow_width: flow runs on grey frames at most this wide.
    clock: a frame's time in seconds (capture time).
    """

    def __init__(self, threshold: float = 0.5, max_carry_s: float = MAX_CARRY_S, ring_s: float = 3.0,
                 ring_bytes: int = 48 * 1024 * 1024, catchup_steps: int = 8, tracker: Optional[Tracker] = None,
                 flow: Optional[Flow] = None, cuts: Optional[CutDetector] = None, flow_width: int = 640,
                 clock: Callable[[Frame], float] = capture_time, still: Optional[Callable[[int], bool]] = None):
        self.max_carry_s = max_carry_s
        self.still = still
        self.ring_s = ring_s
        self.ring_bytes = ring_bytes
        self.catchup_steps = max(1, catchup_steps)
        self.tracker = tracker or Tracker(threshold=threshold)
        self.flow = flow or Flow()
        self.cuts = cuts or CutDetector()
        self.flow_width = flow_width
        self.clock = clock
        self.ring: Deque[_Seen] = deque()
        self.answered: Optional[Tuple[int, float]] = None  # (index, time) of the latest answered frame
        self.shot_start = float("-inf")  # time of the first frame of the current shot (after a cut / reset)
        self._reset_pending = False  # reset() was called: the next pushed frame starts the shot
        self._how: Dict[int, str] = {}
        self._unshown: Set[int] = set()  # tracks the latest answer matched, not drawn on a frame yet
        self._still_s = 0.0  # seconds of still frames pushed so far
        self._answered_still_s = 0.0  # ... up to the latest answered frame
        self._speeds: Dict[int, float] = {}  # shown track id -> smoothed speed (box sizes a second)
        self.moving = False  # a shown track moves (read from other threads: a plain bool)
        self._lock = threading.Lock()  # push() and answer() may come from different threads

    # -- the Stage interface ---------------------------------------------------------------
    def push(self, frame: Frame, detections: Optional[Detections]) -> Iterator[Released]:
        with self._lock:
            shown = self._pushed(frame)
            if detections is not None:  # answered at once (a synchronous caller): the model's boxes
                shown = self._answered(frame, detections)
        return iter([(frame, shown)])

    def _pushed(self, frame: Frame) -> Detections:
        """Carry the shown tracks onto `frame`, keep it in the ring, and return its boxes."""
        time = self.clock(frame)
        grey = grey_of(frame, self.flow_width)
        if self.ring and self.still is not None and self.still(frame.index):
            self._still_s += max(0.0, time - self.ring[-1].time)
        if self.cuts.update_frame(frame, self.flow_width):
            self._end_tracks(time)
        elif self.ring:
            last = self.ring[-1]
            carried = self._shown(last.time, last.still_s)
            self._how = carry_tracks(self.flow, carried, last.grey, grey, last.time, time, self._how)
            self._measure_speeds(carried, last, time)
        seen = _Seen(frame.index, time, grey, {t.id: (t.box.copy(), self._how.get(t.id, FLOW))
                                                for t in self._shown(time, self._still_s)}, self._still_s)
        self.ring.append(seen)
        self._unshown = set()
        self._trim()
        return self._made(seen, frame)

    def answer(self, frame: Frame, detections: Optional[Detections]) -> Optional[Detections]:
        """The model's answer for a frame pushed earlier: its detections with track ids (the
        boxes unchanged); the tracks are corrected and carried to the newest frame."""
        if detections is None:
            return None
        with self._lock:
            return self._answered(frame, detections)

    def _answered(self, frame: Frame, detections: Detections) -> Detections:
        time = self.clock(frame)
        if time < self.shot_start:  # from before a cut or reset: ids, no tracks
            return detections.replace(track_ids=self._ids_only(detections))
        seen = next((s for s in self.ring if s.index == frame.index), None)
        for track in self.tracker.tracks:
            if seen is not None and track.id in seen.boxes:
                track.move(seen.boxes[track.id][0], time)
        ids = self.tracker.update(detections, time, frame.index)
        self._unshown = {t.id for t in self.tracker.active() if t.matched_time == time}
        self._how = {}
        self._catch_up(seen, time)
        self.answered = (frame.index, time)
        # still seconds up to the answered frame (its frame gone from the ring: from the oldest kept)
        self._answered_still_s = seen.still_s if seen is not None else (
            self.ring[0].still_s if self.ring else self._still_s)
        while len(self.ring) > 1 and self.ring[0].time < time:  # answers come in frame order
            self.ring.popleft()
        return detections.replace(track_ids=ids)

    def flush(self) -> Iterator[Released]:
        """Nothing is held live."""
        return iter(())

    def reset(self) -> None:
        """A new stream (reconnect, a looping file camera's restart): no tracks, no frames kept."""
        with self._lock:
            self._end_tracks(None)
            self.cuts.reset()

    def age(self, frame: Frame) -> Optional[float]:
        """Seconds from the latest answered frame to `frame` (None before the first answer): how
        old the inference behind the carried boxes is, for a HUD."""
        if self.answered is None:
            return None
        return self.clock(frame) - self.answered[1]

    @property
    def tracks_active(self) -> int:
        return len(self.tracker.active())

    # -- inside ----------------------------------------------------------------------------
    def _end_tracks(self, time: Optional[float]) -> None:
        """A new shot starts at `time` (None: at the next frame pushed; until then every answer is
        stale)."""
        self.tracker.clear()
        self.ring.clear()
        self._how = {}
        self.answered = None
        self._speeds, self.moving = {}, False
        self.shot_start = time if time is not None else float("inf")
        self._reset_pending = time is None

    def _shown(self, time: float, still_s: float) -> List[Track]:
        """The active tracks whose box is shown on a frame at `time` (`still_s`: the still seconds
        pushed up to it): at most max_carry_s after their match, still frames not counted (but with
        max_carry_s 0, --hold-detections 0: each answer on one frame), and those the latest answer
        matched that no frame has shown yet."""
        still = still_s - self._answered_still_s if self.max_carry_s > 0 else 0.0  # 0: each answer once
        return [t for t in self.tracker.active()
                if time - t.matched_time - still <= self.max_carry_s or t.id in self._unshown]

    def _measure_speeds(self, tracks: List[Track], last: _Seen, time: float) -> None:
        """Each carried track's speed from `last` to this frame (box sizes a second), smoothed;
        only boxes optical flow follows count (a Kalman-carried box moves by its model)."""
        step = time - last.time
        if step <= 0:
            return
        weight = 1.0 - math.exp(-step / MOVING_SMOOTH_S)
        speeds = {}
        for track in tracks:
            before = last.boxes.get(track.id)
            if before is None or self._how.get(track.id) != FLOW:
                continue
            a, b = before[0], track.box
            size = math.sqrt(max(1.0, (a[2] - a[0]) * (a[3] - a[1])))
            shift = math.hypot((b[0] + b[2] - a[0] - a[2]) / 2, (b[1] + b[3] - a[1] - a[3]) / 2)
            old = self._speeds.get(track.id, 0.0)
            speeds[track.id] = old + (shift / size / step - old) * weight
        self._speeds = speeds
        self.moving = any(v > MOVING_SPEED for v in speeds.values())

    def _trim(self) -> None:
        newest = self.ring[-1]
        if self._reset_pending:
            self.shot_start = newest.time
            self._reset_pending = False
        total = sum(s.grey.nbytes for s in self.ring)
        while len(self.ring) > 1 and (newest.time - self.ring[0].time > self.ring_s or total > self.ring_bytes):
            total -= self.ring.popleft().grey.nbytes

    def _catch_up(self, seen: Optional[_Seen], time: float) -> None:
        """Carry the tracks the answer left active from its frame to the newest frame, through
        at most catchup_steps frames in between; rewrite those frames' boxes on the way."""
        active = self.tracker.active()
        newest = self.ring[-1] if self.ring else None
        if newest is None:
            return
        if seen is None:  # the answer's frame is gone from the ring: Kalman motion only
            for track in active:
                track.move(track.kalman_shift(track.box, time, newest.time), newest.time)
                self._how[track.id] = PREDICTED
            newest.boxes = {t.id: (t.box.copy(), PREDICTED) for t in active}
            return
        later = [s for s in self.ring if s.index > seen.index]
        seen.boxes = {t.id: (t.box.copy(), FLOW) for t in active}
        if not later:
            return
        stride = -(-len(later) // self.catchup_steps)  # ceil
        stops = later[stride - 1::stride]
        if stops[-1] is not later[-1]:
            stops.append(later[-1])
        current = seen
        for stop in stops:
            start_boxes = {t.id: t.box.copy() for t in active}
            self._how = carry_tracks(self.flow, active, current.grey, stop.grey, current.time, stop.time, self._how)
            for s in later:  # the frames skipped between two stops: boxes in proportion of time
                if current.index < s.index <= stop.index:
                    f = (s.time - current.time) / (stop.time - current.time) if stop.time > current.time else 1.0
                    s.boxes = {t.id: (start_boxes[t.id] + (t.box - start_boxes[t.id]) * f, self._how[t.id])
                               for t in active}
            current = stop

    def _made(self, seen: _Seen, frame: Frame) -> Detections:
        h, w = frame.image.shape[:2]
        tracks = self.tracker.by_id()
        rows = []
        for track_id, (box, how) in seen.boxes.items():
            track = tracks.get(track_id)
            shown = visible(box, w, h)
            if track is None or shown is None:
                continue
            rows.append(Made(track_id, shown, track.label, track.score, how, seen.time - track.matched_time))
        return tracked_detections(rows)

    def _ids_only(self, detections: Detections) -> np.ndarray:
        """Ids for an answer from an ended shot: a fresh id per box at or above the threshold."""
        ids = np.full(len(detections), NO_ID, np.int64)
        for row in np.flatnonzero(detections.scores >= self.tracker.threshold):
            ids[row] = self.tracker.next_id
            self.tracker.next_id += 1
        return ids
