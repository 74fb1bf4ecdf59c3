"""The event stage: what tracked objects do, after the score threshold, so events agree with what is drawn.

    Stage* = class filter ▶ tracker ▶ threshold ▶ EventStage ──Event──▶ outputs (their own threads)

It sees every drawn frame (`push`: the boxes as drawn, with track ids) and, live, every answer
of the model (`answer`), and never changes what it is given. Per tracked object:

- **new**: once its track has been in `confirm_answers` (2) of the model's answers. A box seen in
  one answer only (a flicker, a false positive) makes no event and is never counted; what it did
  before it was confirmed (entering a zone, crossing a line) is counted and reported when it is.
- **update**: it entered or left a zone (after the zone's `min_frames` frames inside / outside),
  crossed a line, stayed in a zone `loiter_s` seconds, or it scored `snapshot_gain` more than on
  its snapshot's frame (a better snapshot: this frame; at most one such update every
  `snapshot_every_s` seconds).
- **end**: its track ended: missed by more than `end_misses` answers and not drawn for more than
  `end_s` seconds (the tracker's own rule for forgetting a track), a reconnect or a scene cut
  (`reset`), or the end of the run (`flush`).

Lines count the anchor's path between two consecutive drawn positions of an object (so an
object hidden for a few frames still counts when it reappears on the other side) that meets
the segment; hysteresis: the count happens once the anchor is clear of the line by a margin
(10 % of the box's size, 2 px at least) on the other side from where it was last clear, so a
box that jitters across the line, or an object that wobbles on it, counts once at most, and
one that goes in, comes back and goes in again counts in 2, out 1.

Times are the frame's time in the source for files and its capture time live; wall times
(epoch seconds) are given live only. The counts are readable from any thread (`counts()`,
an immutable snapshot replaced on every change).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Protocol, Set, Tuple

import numpy as np

from ..frames import Detections, Frame
from ..stages import PassStage, Released
from .config import Regions
from .geometry import ANCHORS, Resolved, anchors, resolve
from .types import Counts, Crossing, Direction, Event, EventKind, ObjectState, UpdateReason

MAX_OBJECTS = 1024  # objects followed at once; past it the one seen longest ago ends
RECENT_EVENTS = 20  # kept for the page
MAX_PENDING = 32  # crossings / zone entries remembered for an object not confirmed yet
MARGIN_FRACTION = 0.1  # a line's hysteresis margin: this much of the box's size (sqrt(w * h)) ...
MIN_MARGIN_PX = 2.0  # ... and at least this


class EventSink(Protocol):
    """Where the stage sends what it makes (the outputs' fan-out): never blocks."""

    def publish(self, event: Event) -> None: ...

    def counts(self, counts: Counts) -> None: ...


class NoSink:
    def publish(self, event: Event) -> None:
        pass

    def counts(self, counts: Counts) -> None:
        pass


@dataclass
class _Object:
    track_id: int
    slot: int
    label: int
    name: str
    event_id: str
    start: Optional[float]  # first seen: source time (files), epoch (live)
    score: float
    box: np.ndarray
    first_seen: float  # stage clock
    last_seen: float
    last_frame: Optional[Frame] = field(default=None, repr=False)  # without its picture (the end needs its times;
    # a lost object lingers for seconds)
    answers: int = 0
    missed: int = 0
    confirmed: bool = False
    top_score: float = 0.0
    snapshot_score: float = -1.0
    snapshot_time: float = float("-inf")
    zones_in: List[str] = field(default_factory=list)  # in entering order
    entered: List[str] = field(default_factory=list)
    pending: List[Tuple[UpdateReason, Optional[Crossing], Optional[str]]] = field(default_factory=list)
    last_state: Optional[ObjectState] = None


class EventStage(PassStage):
    """Events and counts for one camera (or file); see the module docstring.

    camera: the name events carry; regions: its zones and lines; name_of: class names;
    sink: where events and counts go (the outputs' fan-out); live: a live camera (wall times,
    answers come through `answer`); min_frames: a zone's inertia where it gives none;
    clock: a frame's time in seconds (media time for files, capture time live)."""

    def __init__(self, camera: str, regions: Regions, name_of: Callable[[int], str],
                 sink: Optional[EventSink] = None, live: bool = False, min_frames: int = 1,
                 clock: Optional[Callable[[Frame], float]] = None, confirm_answers: int = 2,
                 end_misses: Optional[int] = None, end_s: Optional[float] = None,
                 snapshot_every_s: float = 1.0, snapshot_gain: float = 0.05, run_start: Optional[float] = None):
        from ..tracking.bytetrack import MAX_AGE_S, MAX_MISSES
        from ..tracking.file_stage import media_time
        from ..tracking.live_stage import capture_time

        self.camera = camera
        self.regions = regions
        self.name_of = name_of
        self.sink: EventSink = sink or NoSink()
        self.live = live
        self.min_frames = min_frames
        self.clock = clock or (capture_time if live else media_time)
        self.confirm_answers = confirm_answers
        self.end_misses = MAX_MISSES if end_misses is None else end_misses
        self.end_s = MAX_AGE_S if end_s is None else end_s
        self.snapshot_every_s = snapshot_every_s
        self.snapshot_gain = snapshot_gain
        started = time.time() if run_start is None else run_start
        self._stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(started)) + f"{int(started * 1000) % 1000:03d}"
        self._epoch_offset = time.time() - time.monotonic()
        self._safe_camera = "".join(c if c.isalnum() or c in "_.-" else "_" for c in camera)[:64] or "camera"
        self._resolved: Dict[Tuple[int, int], Resolved] = {}
        self._objects: Dict[int, _Object] = {}
        self._names: Dict[int, str] = {}
        self._free: List[int] = []
        nl, nz = len(regions.lines), len(regions.zones)
        self._capacity = 0
        self._prev_box = np.zeros((0, 4))
        self._has_prev = np.zeros(0, bool)
        self._line_side = np.zeros((0, nl), np.int8)
        self._line_crossed = np.zeros((0, nl), bool)
        self._zone_in = np.zeros((0, nz), bool)
        self._zone_streak = np.zeros((0, nz), np.int32)
        self._zone_since = np.zeros((0, nz))
        self._zone_loitered = np.zeros((0, nz), bool)
        self._grow(32)
        self._line_counts = {ln.name: {"in": {}, "out": {}} for ln in regions.lines}
        self._zone_entered = {z.name: {} for z in regions.zones}
        self._zone_max = {z.name: {} for z in regions.zones}
        self._counts = self._snapshot({z.name: {} for z in regions.zones})
        self._recent: Tuple[dict, ...] = ()
        self.events = 0  # events made so far

    # -- what other threads read -------------------------------------------------------------
    def counts(self) -> Counts:
        """The counts so far (an immutable snapshot)."""
        return self._counts

    def recent(self) -> Tuple[dict, ...]:
        """The last few events, newest last, as the page lists them."""
        return self._recent

    def geometry(self, width: int, height: int) -> Resolved:
        """The zones and lines in pixels of a width x height picture."""
        return self._geometry(width, height)

    # -- the Stage interface -------------------------------------------------------------------
    def push(self, frame: Frame, detections: Optional[Detections]) -> Iterator[Released]:
        if detections is not None:
            from ..tracking.columns import is_tracked

            answer = not self.live and not is_tracked(detections)
            self._observe(frame, detections, self.clock(frame), answer)
        yield frame, detections

    def answer(self, frame: Frame, detections: Optional[Detections]) -> Optional[Detections]:
        """Live: the model's answer for a frame shown earlier: which tracks it saw (for
        confirmation and for ending the tracks it no longer sees)."""
        if detections is not None and self.live:
            self._answered(frame, detections, self.clock(frame))
        return detections

    def flush(self) -> Iterator[Released]:
        """The run ends: every object ends."""
        self._end_all()
        return iter(())

    def reset(self) -> None:
        """A new stream (a reconnect, a looping file camera): its tracks are new ones."""
        self._end_all()

    # -- inside ----------------------------------------------------------------------------------
    def _geometry(self, width: int, height: int) -> Resolved:
        key = (int(width), int(height))
        found = self._resolved.get(key)
        if found is None:
            found = self._resolved[key] = resolve(self.regions, key[0], key[1], self.min_frames)
        return found

    def _grow(self, capacity: int) -> None:
        old = self._capacity
        if capacity <= old:
            return

        def grown(a: np.ndarray) -> np.ndarray:
            out = np.zeros((capacity,) + a.shape[1:], a.dtype)
            out[:old] = a
            return out

        self._prev_box, self._has_prev = grown(self._prev_box), grown(self._has_prev)
        self._line_side, self._line_crossed = grown(self._line_side), grown(self._line_crossed)
        self._zone_in, self._zone_streak = grown(self._zone_in), grown(self._zone_streak)
        self._zone_since, self._zone_loitered = grown(self._zone_since), grown(self._zone_loitered)
        self._free.extend(range(capacity - 1, old - 1, -1))
        self._capacity = capacity

    def _name(self, label: int) -> str:
        name = self._names.get(label)
        if name is None:
            try:
                name = str(self.name_of(label))
            except Exception:
                name = str(label)
            self._names[label] = name
        return name

    def _wall(self, frame: Frame) -> Optional[float]:
        return self._epoch_offset + frame.wall_time if self.live else None

    def _start_time(self, frame: Frame) -> Optional[float]:
        return self._wall(frame) if self.live else frame.time

    def _object(self, track_id: int, label: int, score: float, box: np.ndarray, t: float, frame: Frame) -> _Object:
        """The object of `track_id`, seen at `t` on `frame` (one without its image: it is kept)."""
        obj = self._objects.get(track_id)
        if obj is None:
            if len(self._objects) >= MAX_OBJECTS:
                oldest = min(self._objects.values(), key=lambda o: o.last_seen)
                self._end(oldest, frame)
            if not self._free:
                self._grow(self._capacity * 2)
            slot = self._free.pop()
            self._clear_slot(slot)
            obj = _Object(track_id=track_id, slot=slot, label=label, name=self._name(label),
                          event_id=f"{self._stamp}-{self._safe_camera}-{track_id}", start=self._start_time(frame),
                          score=score, box=box, first_seen=t, last_seen=t)
            self._objects[track_id] = obj
        obj.label, obj.name = label, self._name(label)
        obj.score = score
        obj.top_score = max(obj.top_score, score)
        obj.box = box
        obj.last_seen = t
        obj.last_frame = frame
        return obj

    def _clear_slot(self, slot: int) -> None:
        self._has_prev[slot] = False
        self._line_side[slot] = 0
        self._line_crossed[slot] = False
        self._zone_in[slot] = False
        self._zone_streak[slot] = 0
        self._zone_loitered[slot] = False

    def _rows(self, detections: Detections):
        ids = detections.track_ids
        if ids is None:
            return None
        keep = np.flatnonzero(ids >= 0)
        return keep if len(keep) else None

    def _observe(self, frame: Frame, detections: Detections, t: float, answer: bool) -> None:
        """One drawn frame: the objects on it move; zones and lines look at their anchors."""
        rows = self._rows(detections)
        h, w = frame.image.shape[:2]
        geometry = self._geometry(w, h)
        seen: Set[int] = set()
        if rows is not None:
            boxes = detections.boxes[rows].astype(np.float64)
            labels = detections.labels[rows]
            scores = detections.scores[rows]
            light = frame.without_image()
            objects = [self._object(int(detections.track_ids[r]), int(lab), float(s), b, t, light)
                       for r, lab, s, b in zip(rows, labels, scores, boxes)]
            seen = {o.track_id for o in objects}
            if answer:
                for obj in objects:
                    obj.answers += 1
                    obj.missed = 0
            self._move(geometry, objects, boxes, t)
            for obj in objects:
                self._settle(obj, frame, t)
        if answer:
            self._count_misses(seen, frame, t)

    def _answered(self, frame: Frame, detections: Detections, t: float) -> None:
        """Live: an answer for a frame shown earlier. What it settles (a `new` event, a better
        snapshot) shows that frame: the answer's box and score on it, not the newest drawn ones."""
        rows = self._rows(detections)
        seen: Set[int] = set()
        if rows is not None:
            light = None
            for r in rows:
                track_id = int(detections.track_ids[r])
                box, score = detections.boxes[r].astype(np.float64), float(detections.scores[r])
                obj = self._objects.get(track_id)
                if obj is None:  # not drawn yet (it will be on the next shown frame)
                    light = light or frame.without_image()
                    obj = self._object(track_id, int(detections.labels[r]), score, box, t, light)
                obj.top_score = max(obj.top_score, score)
                obj.answers += 1
                obj.missed = 0
                seen.add(track_id)
                self._settle(obj, frame, t, (box, score))
        self._count_misses(seen, frame, t)

    def _count_misses(self, seen: Set[int], frame: Frame, t: float) -> None:
        ended = []
        for obj in self._objects.values():
            if obj.track_id not in seen:
                obj.missed += 1
                if obj.missed > self.end_misses and t - obj.last_seen > self.end_s:
                    ended.append(obj)
        for obj in ended:
            self._end(obj, frame)

    def _move(self, geometry: Resolved, objects: List[_Object], boxes: np.ndarray, t: float) -> None:
        """Zones and lines for the objects on this frame: numpy over (objects x lines) and
        (objects x zones) at once; Python only for what changed."""
        slots = np.fromiter((o.slot for o in objects), np.int64, len(objects))
        applies = [geometry.applies(o.name) for o in objects]
        now = np.stack([anchors(boxes, a) for a in ANCHORS])  # (3, N, 2): bottom, centre, top
        if len(geometry.lines):
            self._cross_lines(geometry, objects, slots, boxes, now, np.array([a[0] for a in applies]))
        if len(geometry.zones):
            self._enter_zones(geometry, objects, slots, now, np.array([a[1] for a in applies]), t)
        self._prev_box[slots] = boxes
        self._has_prev[slots] = True

    def _cross_lines(self, geometry: Resolved, objects: List[_Object], slots: np.ndarray, boxes: np.ndarray,
                     now: np.ndarray, applies: np.ndarray) -> None:
        points = now[geometry.line_anchor].transpose(1, 0, 2)  # (N, L, 2): each line's anchor
        prev = self._prev_box[slots]
        then = np.stack([anchors(prev, a) for a in ANCHORS])[geometry.line_anchor].transpose(1, 0, 2)
        size = np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None))
        margin = np.maximum(MIN_MARGIN_PX, MARGIN_FRACTION * size)[:, None]
        d = geometry.sides(points)
        crossed = self._has_prev[slots][:, None] & geometry.crossed(then, points)
        flag = self._line_crossed[slots] | crossed
        last = self._line_side[slots]
        clear = np.abs(d) >= margin
        new_side = np.where(d > 0, 1, -1).astype(np.int8)
        counted = applies & clear & (last != 0) & (new_side != last) & flag
        self._line_side[slots] = np.where(clear, new_side, last)
        self._line_crossed[slots] = flag & ~clear
        for i, li in zip(*np.nonzero(counted)):
            direction = Direction.IN if new_side[i, li] > 0 else Direction.OUT
            line = geometry.lines[li].name
            self._note(objects[i], UpdateReason.CROSSED_LINE, Crossing(line, direction, objects[i].name))

    def _enter_zones(self, geometry: Resolved, objects: List[_Object], slots: np.ndarray, now: np.ndarray,
                     applies: np.ndarray, t: float) -> None:
        points = now[geometry.zone_anchor].transpose(1, 0, 2)  # (N, Z, 2)
        now_in = applies & geometry.inside(points)
        state = self._zone_in[slots]
        streak = np.where(now_in != state, self._zone_streak[slots] + 1, 0)
        flip = streak >= geometry.zone_min_frames[None, :]
        new_state = state ^ flip
        self._zone_in[slots] = new_state
        self._zone_streak[slots] = np.where(flip, 0, streak)
        for i, zi in zip(*np.nonzero(flip)):
            obj, zone = objects[i], geometry.zones[zi].name
            if new_state[i, zi]:
                self._zone_since[obj.slot, zi] = t
                self._zone_loitered[obj.slot, zi] = False
                obj.zones_in.append(zone)
                if zone not in obj.entered:
                    obj.entered.append(zone)
                self._note(obj, UpdateReason.ENTERED_ZONE, None, zone)
            else:
                if zone in obj.zones_in:
                    obj.zones_in.remove(zone)
                self._note(obj, UpdateReason.LEFT_ZONE, None, zone)
        loiter_s = geometry.loiter_s
        if loiter_s is not None:
            due = new_state & ~self._zone_loitered[slots] & (t - self._zone_since[slots] >= loiter_s[None, :])
            for i, zi in zip(*np.nonzero(due)):
                self._zone_loitered[objects[i].slot, zi] = True
                self._note(objects[i], UpdateReason.LOITERING, None, geometry.zones[zi].name)

    def _note(self, obj: _Object, reason: UpdateReason, crossing: Optional[Crossing] = None,
              zone: Optional[str] = None) -> None:
        if len(obj.pending) < MAX_PENDING:
            obj.pending.append((reason, crossing, zone))

    def _settle(self, obj: _Object, frame: Frame, t: float, shown: Optional[Tuple[np.ndarray, float]] = None) -> None:
        """Send what happened to `obj` on this frame (once it is confirmed): new, then updates.
        shown: its (box, score) on `frame` when that is not the newest drawn (a live answer)."""
        score = obj.score if shown is None else shown[1]
        if not obj.confirmed:
            if obj.answers < self.confirm_answers:
                return
            obj.confirmed = True
            obj.snapshot_score, obj.snapshot_time = score, t
            self._emit(EventKind.NEW, obj, frame, image=frame.image, shown=shown)
        reasons: List[UpdateReason] = []
        crossings: List[Crossing] = []
        counted_change = False
        for reason, crossing, zone in obj.pending:
            if reason not in reasons:
                reasons.append(reason)
            if crossing is not None:
                crossings.append(crossing)
                per = self._line_counts[crossing.line][str(crossing.direction)]
                per[obj.name] = per.get(obj.name, 0) + 1
                counted_change = True
            elif reason is UpdateReason.ENTERED_ZONE:
                per = self._zone_entered[zone]
                per[obj.name] = per.get(obj.name, 0) + 1
                counted_change = True
            elif reason is UpdateReason.LEFT_ZONE:
                counted_change = True
        obj.pending.clear()
        image = None
        # this frame's own score (its picture is the snapshot), never the top score reached on a frame
        # passed while snapshots were rate-limited: a later, lower-scored frame is no better snapshot
        if score >= obj.snapshot_score + self.snapshot_gain and t - obj.snapshot_time >= self.snapshot_every_s:
            reasons.append(UpdateReason.BETTER_SNAPSHOT)
            obj.snapshot_score, obj.snapshot_time = score, t
            image = frame.image
        if counted_change:
            self._recount()
        if reasons:
            self._emit(EventKind.UPDATE, obj, frame, reasons=tuple(reasons), crossings=tuple(crossings), image=image,
                       shown=shown)

    def _state(self, obj: _Object, frame: Frame, end: bool = False,
               shown: Optional[Tuple[np.ndarray, float]] = None) -> ObjectState:
        wall = self._wall(frame)
        now = wall if self.live else frame.time
        box, score = (obj.box, obj.score) if shown is None else shown
        return ObjectState(
            id=obj.event_id, camera=self.camera, label=obj.name, track_id=obj.track_id, score=score,
            top_score=obj.top_score, box=tuple(float(v) for v in box),
            current_zones=() if end else tuple(obj.zones_in), entered_zones=tuple(obj.entered),
            frame_index=frame.index, source_time=frame.time, wall_time=wall, start_time=obj.start,
            end_time=now if end else None)

    def _emit(self, kind: EventKind, obj: _Object, frame: Frame, reasons=(), crossings=(), image=None,
              end: bool = False, shown: Optional[Tuple[np.ndarray, float]] = None) -> None:
        after = self._state(obj, frame, end, shown)
        event = Event(kind=kind, after=after, before=obj.last_state, reasons=tuple(reasons),
                      crossings=tuple(crossings), image=image)
        obj.last_state = after
        self.events += 1
        item = {"type": str(kind), "id": after.id, "label": after.label, "track_id": after.track_id,
                "reasons": [str(r) for r in reasons], "crossings": [c.to_json() for c in crossings],
                "zones": list(after.current_zones), "frame": after.frame_index,
                "time": after.wall_time if self.live else after.source_time}
        self._recent = self._recent[-(RECENT_EVENTS - 1):] + (item,)
        self.sink.publish(event)

    def _end(self, obj: _Object, frame: Frame) -> None:
        self._objects.pop(obj.track_id, None)
        self._free.append(obj.slot)
        self._clear_slot(obj.slot)
        if obj.confirmed:
            last = obj.last_frame or frame
            had_zones = bool(obj.zones_in)
            self._emit(EventKind.END, obj, last, end=True)
            obj.zones_in = []
            if had_zones:
                self._recount()

    def _end_all(self) -> None:
        for obj in list(self._objects.values()):
            self._end(obj, obj.last_frame)
        self._objects.clear()

    def _recount(self) -> None:
        """The per-zone counts of objects inside now, their maxima; a new snapshot to the outputs."""
        inside_now: Dict[str, Dict[str, int]] = {z.name: {} for z in self.regions.zones}
        for obj in self._objects.values():
            if obj.confirmed:
                for zone in obj.zones_in:
                    inside_now[zone][obj.name] = inside_now[zone].get(obj.name, 0) + 1
        for zone, per in inside_now.items():
            top = self._zone_max[zone]
            for label, n in per.items():
                if n > top.get(label, 0):
                    top[label] = n
        self._counts = self._snapshot(inside_now)
        self.sink.counts(self._counts)

    def _snapshot(self, inside_now: Dict[str, Dict[str, int]]) -> Counts:
        return Counts(
            camera=self.camera,
            lines={name: {d: dict(per) for d, per in dirs.items()} for name, dirs in self._line_counts.items()},
            zones={name: {"entered": dict(self._zone_entered[name]), "inside": dict(inside_now.get(name, {})),
                          "max_inside": dict(self._zone_max[name])} for name in self._zone_entered})
