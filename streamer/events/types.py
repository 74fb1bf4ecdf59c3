"""The values events are made of, and the interface of an event output.

An `Event` follows Frigate's shape, so automations written for `frigate/events` port easily:
`{"type": "new" | "update" | "end", "before": {...} | null, "after": {...}}` where before/after
are `ObjectState.to_json()` of the tracked object before and after what changed.

These are the contract between the stage that makes events (zones, lines, tracks) and the
outputs that send them (JSONL, MQTT, webhooks, snapshots, clips). Add fields where an output
needs them; keep the names and meanings of those here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Optional, Protocol, Tuple, runtime_checkable

import numpy as np

from ..states import Word

if TYPE_CHECKING:
    from ..stages import Sink

Box = Tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the upright picture


class EventKind(Word):
    NEW = "new"  # a track confirmed above the threshold
    UPDATE = "update"  # it entered or left a zone, crossed a line, loitered, or its snapshot improved
    END = "end"  # its track ended


class UpdateReason(Word):
    ENTERED_ZONE = "entered_zone"
    LEFT_ZONE = "left_zone"
    CROSSED_LINE = "crossed_line"
    LOITERING = "loitering"
    BETTER_SNAPSHOT = "better_snapshot"


class Direction(Word):
    """A line crossing: `in` is onto the right-hand side of P1->P2 as drawn (x right, y down)."""

    IN = "in"
    OUT = "out"


@dataclass(frozen=True)
class Crossing:
    line: str
    direction: Direction
    label: str

    def to_json(self) -> dict:
        return {"line": self.line, "direction": str(self.direction), "label": self.label}


@dataclass(frozen=True)
class ObjectState:
    """One tracked object as an event shows it (Frigate's before/after).

    id: the event id, unique over runs (camera, start and track id); frame_index: the frame this
    state was seen on; source_time: that frame's time in the source (seconds; None: unknown);
    wall_time: epoch seconds for live sources (None for files); start_time / end_time: the
    object's first and last frame time (source time for files, epoch seconds live); snapshot /
    clip: paths written by those outputs (None: none)."""

    id: str
    camera: str
    label: str
    track_id: int
    score: float
    top_score: float
    box: Box
    current_zones: Tuple[str, ...]
    entered_zones: Tuple[str, ...]
    frame_index: int
    source_time: Optional[float]
    wall_time: Optional[float]
    start_time: Optional[float]
    end_time: Optional[float] = None
    snapshot: Optional[str] = None
    clip: Optional[str] = None

    def to_json(self) -> dict:
        return {"id": self.id, "camera": self.camera, "label": self.label, "track_id": self.track_id,
                "score": round(float(self.score), 4), "top_score": round(float(self.top_score), 4),
                "box": [round(float(v), 2) for v in self.box], "current_zones": list(self.current_zones),
                "entered_zones": list(self.entered_zones), "frame_index": self.frame_index,
                "source_time": self.source_time, "wall_time": self.wall_time, "start_time": self.start_time,
                "end_time": self.end_time, "has_snapshot": self.snapshot is not None,
                "has_clip": self.clip is not None, "snapshot": self.snapshot, "clip": self.clip}


@dataclass(frozen=True)
class Event:
    """One thing that happened to one tracked object.

    reasons: why an `update` was sent (empty for new/end); crossings: the line crossings this
    event reports; image: the frame the object's best snapshot is on (RGB, not drawn; None when
    the snapshot did not change), for the snapshot and MQTT outputs. Outputs must not modify it."""

    kind: EventKind
    after: ObjectState
    before: Optional[ObjectState] = None
    reasons: Tuple[UpdateReason, ...] = ()
    crossings: Tuple[Crossing, ...] = ()
    image: Optional[np.ndarray] = field(default=None, repr=False, compare=False)

    @property
    def camera(self) -> str:
        return self.after.camera

    def to_json(self) -> dict:
        return {"type": str(self.kind), "before": None if self.before is None else self.before.to_json(),
                "after": self.after.to_json(), "reasons": [str(r) for r in self.reasons],
                "crossings": [c.to_json() for c in self.crossings]}


@dataclass(frozen=True)
class Counts:
    """A camera's (or file's) counts so far.

    lines: {line: {"in": {label: n}, "out": {label: n}}}; zones: {zone: {"entered": {label: n},
    "inside": {label: n} (now), "max_inside": {label: n}}}."""

    camera: str
    lines: Mapping[str, Mapping[str, Mapping[str, int]]] = field(default_factory=dict)
    zones: Mapping[str, Mapping[str, Mapping[str, int]]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"lines": {n: {d: dict(v) for d, v in ds.items()} for n, ds in self.lines.items()},
                "zones": {n: {k: dict(v) for k, v in ks.items()} for n, ks in self.zones.items()}}


class OutputState(Word):
    """An event output's connection, as cameras show theirs."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RETRYING = "retrying"
    GIVEN_UP = "given up"
    CLOSED = "closed"


@dataclass(frozen=True)
class OutputStatus:
    """What an output says about itself (report, status line, metrics, /api/state).

    sent: events delivered; dropped: events its queue could not hold; failed: events given up
    after retries; reason: why it is retrying or gave up (never holds a secret)."""

    name: str
    state: OutputState
    sent: int = 0
    dropped: int = 0
    failed: int = 0
    reason: Optional[str] = None

    def to_json(self) -> dict:
        return {"name": self.name, "state": str(self.state), "sent": self.sent, "dropped": self.dropped,
                "failed": self.failed, "reason": self.reason}


@runtime_checkable
class EventOutput(Protocol):
    """Where events go. A context manager; `publish` and `counts` are called on the video path and
    must never block: they hand the value to the output's own thread through a bounded queue (what
    overflows is dropped, counted in `status().dropped`, and logged once)."""

    def __enter__(self) -> "EventOutput": ...

    def __exit__(self, *exc) -> None: ...

    def stamp(self, event: Event) -> Event:
        """Before any output gets `event`: the event with the paths of the files this output will
        write for it (`after.snapshot`, `after.clip`), so every output's JSON names them; outputs
        that write no files return it unchanged. On the video path: bookkeeping only."""

    def publish(self, event: Event) -> None: ...

    def counts(self, counts: Counts) -> None:
        """The camera's counts changed (retained-count topics, the page)."""

    def frame_sink(self, camera: str, lossless: bool) -> Optional["Sink"]:
        """The Sink that takes `camera`'s drawn frames, for an output that needs the video itself
        (clips); None for the others. lossless: a file run (the sink may wait; live ones drop)."""

    def status(self) -> OutputStatus: ...

