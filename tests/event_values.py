"""Synthetic event values for the event outputs' tests (what the events stage would make)."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Tuple

import numpy as np

from streamer.events import Counts, Event, EventKind, ObjectState


def state(camera: str = "front", track_id: int = 1, frame_index: int = 0, t: float = 0.0, label: str = "person",
          box: Tuple[float, float, float, float] = (40, 30, 120, 140), score: float = 0.9, live: bool = False,
          zones: Tuple[str, ...] = (), end: Optional[float] = None) -> ObjectState:
    wall = 1_765_000_000.0 + t if live else None
    start = wall if live else t
    return ObjectState(id=f"{camera}-{int(start * 1000)}-{track_id}", camera=camera, label=label, track_id=track_id,
                       score=score, top_score=score, box=box, current_zones=zones, entered_zones=zones,
                       frame_index=frame_index, source_time=t, wall_time=wall, start_time=start, end_time=end)


def lifecycle(camera: str = "front", track_id: int = 1, first: int = 0, last: int = 10, rate: float = 25.0,
              image: Optional[np.ndarray] = None, **kw):
    """new (with an image), update (entered a zone), end: one object's three events."""
    new = state(camera, track_id, first, first / rate, **kw)
    upd = replace(new, frame_index=(first + last) // 2, source_time=(first + last) / 2 / rate,
                  current_zones=("yard",), entered_zones=("yard",))
    end = replace(upd, frame_index=last, source_time=last / rate, current_zones=(), end_time=last / rate)
    return [Event(EventKind.NEW, new, None, image=image), Event(EventKind.UPDATE, upd, new),
            Event(EventKind.END, end, upd)]


def image(width: int = 200, height: int = 150, value: int = 90) -> np.ndarray:
    img = np.full((height, width, 3), value, np.uint8)
    img[30:140, 40:120] = (20, 200, 20)
    return img


def counts(camera: str = "front", door_in: int = 2, door_out: int = 1, inside: int = 1) -> Counts:
    return Counts(camera=camera, lines={"door": {"in": {"person": door_in}, "out": {"person": door_out}}},
                  zones={"yard": {"entered": {"person": door_in}, "inside": {"person": inside},
                                  "max_inside": {"person": max(inside, 1)}}})
