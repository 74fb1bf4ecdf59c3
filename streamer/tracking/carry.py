"""One step of carrying tracks from a frame to the next: optical flow, Kalman where it fails.

Shared by the file and live stages. The boxes moved are the tracks' own estimates
(`Track.box`); after the step each track's box is its estimate on the new frame.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional

import numpy as np

from .bytetrack import Track
from .columns import FLOW, PREDICTED
from .flow import Flow, Grey


def carry_tracks(flow: Optional[Flow], tracks: Iterable[Track], before: Optional[Grey], after: Optional[Grey],
                 t_before: float, t_after: float, how: Optional[Dict[int, str]] = None) -> Dict[int, str]:
    """Move every track's box from the frame `before` (at t_before) to `after` (at t_after).

    Where flow follows a box, its box is the flow's; where it fails (or without flow: `flow`,
    `before` or `after` None), the box moves as the track's Kalman model predicts between the
    two times. Returns, per track id, how its box has been carried since its last detection:
    FLOW, or PREDICTED once any step was not flow (`how`: the same map from the previous step,
    updated and returned)."""
    how = {} if how is None else how
    tracks = list(tracks)
    if not tracks:
        return how
    boxes = np.array([t.box for t in tracks])
    if flow is None or before is None or after is None:
        moved, ok = boxes, np.zeros(len(tracks), bool)
    else:
        moved, ok = flow.carry(before, after, boxes)
    for track, box, good in zip(tracks, moved, ok):
        if not good:
            box = track.kalman_shift(track.box, t_before, t_after)
        track.move(box, t_after)
        how[track.id] = FLOW if good and how.get(track.id, FLOW) == FLOW else PREDICTED
    return how


def visible(box: np.ndarray, width: int, height: int, min_side: float = 2.0) -> Optional[np.ndarray]:
    """The part of a carried box inside the frame, or None when too little of it is."""
    x1, y1 = max(0.0, float(box[0])), max(0.0, float(box[1]))
    x2, y2 = min(float(width), float(box[2])), min(float(height), float(box[3]))
    if x2 - x1 < min_side or y2 - y1 < min_side:
        return None
    return np.array([x1, y1, x2, y2])
