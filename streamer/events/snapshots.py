"""Snapshots: one JPEG per tracked object, the frame where it scored best, its box drawn.

    event (its `image`: the object's best frame so far, undrawn) ──▶ draw the box ──▶ JPEG
          ──▶ DIR/CAMERA-TIME-LABEL-ID.jpg (temp file + rename: never half-written)

The file is named when the object's first snapshot arrives (`stamp`, on the video path, so
every output's JSON holds the path) and replaced whenever a better frame comes; with
`--snapshot-crop` a close-up of the box is written beside it (`...-crop.jpg`). The JPEG work
runs on the output's own thread. `snapshot_jpeg` is shared with MQTT's snapshot topic.
"""

from __future__ import annotations

import os
import re
import time
from collections import OrderedDict, deque
from dataclasses import replace
from pathlib import Path
from typing import Deque, Optional, Set

import cv2
import numpy as np

from ..frames import Detections, to_bgr
from .destinations import SnapshotSettings
from .queued import QueuedOutput, Say
from .types import Event, EventKind, ObjectState, OutputState

JPEG_QUALITY = 90
CROP_MARGIN = 0.25  # the close-up: the box grown by this fraction of its size on every side
QUEUE = 32  # snapshots waiting for the JPEG encoder (each holds a reference to one frame)
REMEMBERED = 4096  # objects whose snapshot name is kept (oldest forgotten first; live objects end long before)


def draw_object(image: np.ndarray, state: ObjectState) -> np.ndarray:
    """A copy of `image` (RGB) with the object's box and `label #id score` drawn, as the video shows it."""
    from ..render import draw_detections

    one = Detections(np.asarray([state.box], np.float32), np.zeros(1, np.int64),
                     np.asarray([state.score], np.float32), track_ids=np.asarray([state.track_id], np.int64))
    return draw_detections(image, one, lambda _label: state.label)


def crop_box(image: np.ndarray, box, margin: float = CROP_MARGIN) -> np.ndarray:
    """The box grown by `margin` on every side, clipped to the picture (at least 1x1)."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = int(max(0, min(w - 1, np.floor(x1 - mx)))), int(max(0, min(h - 1, np.floor(y1 - my))))
    right, bottom = int(max(left + 1, min(w, np.ceil(x2 + mx)))), int(max(top + 1, min(h, np.ceil(y2 + my))))
    return image[top:bottom, left:right]


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    ok, data = cv2.imencode(".jpg", to_bgr(rgb), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not encode the snapshot")
    return data.tobytes()


def snapshot_jpeg(event: Event, crop: bool = False) -> Optional[bytes]:
    """The event's best frame with the object's box drawn, as JPEG (None: the event has no image)."""
    if event.image is None:
        return None
    drawn = draw_object(event.image, event.after)
    return encode_jpeg(crop_box(drawn, event.after.box) if crop else drawn)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe(text: str) -> str:
    """A piece of a file name: letters, digits, '_', '.', '-' (anything else becomes '_')."""
    return _UNSAFE.sub("_", str(text)).strip("._") or "_"


def time_label(state: ObjectState) -> str:
    """When the object appeared, for a file name: local date-time live (20261207-142312),
    the position in the source for files (00h01m02.40s)."""
    if state.wall_time is not None:  # live: start_time is epoch seconds
        start = state.start_time if state.start_time is not None else state.wall_time
        return time.strftime("%Y%m%d-%H%M%S", time.localtime(start))
    seconds = state.start_time if state.start_time is not None else (state.source_time or 0.0)
    seconds = max(0.0, float(seconds))
    return f"{int(seconds // 3600):02d}h{int(seconds % 3600 // 60):02d}m{seconds % 60:05.2f}s"


def snapshot_name(state: ObjectState) -> str:
    """CAMERA-TIME-LABEL-TRACK.jpg: what a person looks for (the event id is in every event's JSON)."""
    return f"{safe(state.camera)}-{time_label(state)}-{safe(state.label)}-{state.track_id}.jpg"


class UniqueNames:
    """File names decided on the video path (before the file exists): `base`, else `base-2`,
    `base-3`... unique among the last `keep` handed out and the files already there. Bounded: the
    oldest names are forgotten (their files exist by then, and `exists()` sees them)."""

    def __init__(self, keep: int):
        self.keep = keep
        self._order: Deque[Path] = deque()
        self._taken: Set[Path] = set()

    def __len__(self) -> int:
        return len(self._taken)

    def take(self, path: Path) -> Path:
        candidate, n = path, 2
        while candidate in self._taken or candidate.exists():
            candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
            n += 1
        self._taken.add(candidate)
        self._order.append(candidate)
        while len(self._order) > self.keep:
            self._taken.discard(self._order.popleft())
        return candidate


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary name beside `path`, then rename it into place."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class SnapshotOutput(QueuedOutput):
    """--snapshots DIR: the EventOutput that writes each object's best frame as a JPEG."""

    def __init__(self, settings: SnapshotSettings, log: Say, capacity: int = QUEUE):
        super().__init__(f"snapshots {settings.folder}", capacity, log)
        self.settings = settings
        self.folder = Path(settings.folder)
        self._names: "OrderedDict[str, Path]" = OrderedDict()  # event id -> its snapshot (video path only)
        self._unique = UniqueNames(REMEMBERED)

    # -- the video path ----------------------------------------------------------------------
    def stamp(self, event: Event) -> Event:
        """The event with `after.snapshot` set to the object's file (named at its first image)."""
        key = event.after.id
        path = self._names.get(key)
        if path is None and event.image is not None:
            path = self._unique.take(self.folder / snapshot_name(event.after))
            self._names[key] = path
            while len(self._names) > REMEMBERED:
                self._names.popitem(last=False)
        if event.kind is EventKind.END:
            self._names.pop(key, None)
        if path is None:
            return event
        return replace(event, after=replace(event.after, snapshot=str(path)))

    def publish(self, event: Event) -> None:
        if event.image is not None and event.after.snapshot is not None:
            self.offer(event)

    # -- the output's thread -------------------------------------------------------------------
    def begin(self) -> None:
        self.set_state(OutputState.CONNECTED)

    def handle(self, event: Event) -> None:
        path = Path(event.after.snapshot)
        try:
            drawn = draw_object(event.image, event.after)
            write_atomic(path, encode_jpeg(drawn))
            if self.settings.crop:
                write_atomic(crop_path(path), encode_jpeg(crop_box(drawn, event.after.box)))
        except (OSError, ValueError) as err:
            self.count(failed=1)
            reason = getattr(err, "strerror", None) or str(err)
            self.set_state(OutputState.GIVEN_UP, f"cannot write {path.name}: {reason}")
            self.say_once("write", f"WARNING: snapshots: cannot write {path} ({reason})")
            return
        self.count(sent=1)
        self.set_state(OutputState.CONNECTED)


def crop_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}-crop{path.suffix}")
