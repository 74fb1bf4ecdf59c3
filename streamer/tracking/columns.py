"""How a tracker stage marks the boxes it made: extra `Detections.data` columns.

On a frame the model saw, a stage passes the model's own Detections with `track_ids` added and
no other change. On a frame the model did not see, it releases Detections it made itself (possibly
with no rows), carrying these columns:

- TRACKED ("tracked", bool, every row True): its *presence* marks the frame as filled by the
  tracker, even with zero rows (masking keeps the column), so a sink writes JSONL status
  `tracked` when `is_tracked(detections)`, and `ok` otherwise.
- ESTIMATE ("estimate", str): how each box was made: INTERPOLATED (between the track's boxes on
  the inferred frames before and after), FLOW (carried by optical flow from the last inferred
  frame), PREDICTED (carried, with the Kalman model's motion where flow failed on some step).
- AGE ("age_s", float32): seconds from the frame of the track's last matched detection to this
  frame (for a HUD: how old the inference behind the box is).

labels and scores of a made box are those of the track's last matched detection, so the run's
threshold and class filter apply to it as to the model's boxes.
"""

from __future__ import annotations

from typing import List, NamedTuple

import numpy as np

from ..frames import Detections

TRACKED = "tracked"
ESTIMATE = "estimate"
AGE = "age_s"

INTERPOLATED = "interpolated"
FLOW = "flow"
PREDICTED = "predicted"


class Made(NamedTuple):
    """One box a tracker made for a frame the model did not see."""

    track_id: int
    box: np.ndarray
    label: int
    score: float
    estimate: str
    age_s: float


def is_tracked(detections: Detections) -> bool:
    """True when the tracker made these detections (the model did not see the frame)."""
    return TRACKED in detections.data


def tracked_detections(rows: List[Made]) -> Detections:
    """Detections for a frame the model did not see, ordered by track id."""
    rows = sorted(rows, key=lambda r: r.track_id)
    return Detections(
        boxes=np.array([r.box for r in rows], np.float32).reshape(-1, 4),
        labels=np.array([r.label for r in rows], np.int64),
        scores=np.array([r.score for r in rows], np.float32),
        track_ids=np.array([r.track_id for r in rows], np.int64),
        data={TRACKED: np.ones(len(rows), bool),
              ESTIMATE: np.array([r.estimate for r in rows], dtype="<U12"),
              AGE: np.array([r.age_s for r in rows], np.float32)},
    )
