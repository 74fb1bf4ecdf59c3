"""ByteTrack-style association: ids for the model's boxes, tracks kept between inferences.

One `Tracker` per camera. `update(detections, time)` gives every detection row a track id (or
-1) and never changes a box: the ids are a column added to the model's own boxes (the fidelity
rule). Matching, in two rounds as ByteTrack does:

1. detections scored >= `threshold` against every track (active and lost), by IoU with the
   track's box estimated for this time: the better of what the stage carried it to (optical
   flow) and the Kalman prediction, both boxes of a pair enlarged in proportion to how long ago
   the track was last matched (its estimate is less certain);
2. the active tracks left over against the low-scored detections (`low` <= score <
   `threshold`), by plain IoU >= `low_iou`: a box whose score dipped keeps its track.

Both rounds match only equal labels and take the optimal assignment. A high-scored detection
left over starts a new track with a new id at once. A low-scored one left over gets id -1 and
starts nothing (it is below the threshold, so it is not drawn; a weak box never spawns a
track). Ids count up from `first_id` and are never reused, not even after `clear()`.

Ageing is in seconds: a track not matched for more than `max_age_s` is forgotten. Times come
from the stage (media time in files, capture time live).

Exact: the ids' assignment given the estimates. Estimated: the boxes tracks are matched
against (Kalman prediction, optical flow).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

from ..frames import Detections
from .assign import FORBIDDEN, assign, iou_matrix
from .kalman import BoxKalman

NO_ID = -1


@dataclass
class Track:
    """One followed object.

    label, score: of its last matched detection (a carried box shows them).
    box, box_time: its latest box estimate and the time it is for (a detection's box as given,
        or where a stage carried it).
    matched_time: when a detection last matched it; matched_index: that frame's index.
    active: matched at the latest update (drawn and carried); False: lost (kept for matching).
    """

    id: int
    label: int
    score: float
    box: np.ndarray
    box_time: float
    kalman: BoxKalman = field(repr=False)
    matched_time: float
    matched_index: int = -1
    active: bool = True
    hits: int = 1

    def move(self, box: np.ndarray, time: float) -> None:
        """Set the box estimate for `time` (a stage carried the track there)."""
        self.box = np.asarray(box, np.float64)
        self.box_time = time

    def kalman_shift(self, box: np.ndarray, start: float, end: float) -> np.ndarray:
        """`box` moved by the change the Kalman model predicts between two times (the fallback
        where optical flow fails): the same displacement and scale, applied to this box."""
        a = self.kalman.predict(start)
        b = self.kalman.predict(end)
        return shift_box(box, a, b)


def shift_box(box: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """`box` moved and scaled (about its centre) as `before` became `after`."""
    box = np.asarray(box, np.float64)
    sx = max(after[2] - after[0], 1e-6) / max(before[2] - before[0], 1e-6)
    sy = max(after[3] - after[1], 1e-6) / max(before[3] - before[1], 1e-6)
    dx = (after[0] + after[2] - before[0] - before[2]) / 2
    dy = (after[1] + after[3] - before[1] - before[3]) / 2
    cx, cy = (box[0] + box[2]) / 2 + dx, (box[1] + box[3]) / 2 + dy
    hw, hh = (box[2] - box[0]) * sx / 2, (box[3] - box[1]) * sy / 2
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh])


class Tracker:
    """Track ids for one camera (see the module docstring).

    threshold: the run's score threshold: detections at or above it are matched first and start
        tracks; low <= score < threshold: the second round only; below `low`: never matched.
    match_iou: round 1 needs IoU >= this (on boxes enlarged by the estimate's age);
    low_iou: round 2 needs plain IoU >= this.
    margin_per_s, max_margin: how much boxes are enlarged for round 1 per second since the
        track was last matched (a fraction of their size on every side), and at most.
    max_age_s: a track unmatched for longer is forgotten.
    first_id: the first id handed out.
    """

    def __init__(self, threshold: float = 0.5, low: float = 0.1, match_iou: float = 0.2, low_iou: float = 0.5,
                 margin_per_s: float = 1.0, max_margin: float = 0.5, max_age_s: float = 2.0, first_id: int = 1):
        if not 0 <= low <= threshold:
            raise ValueError(f"need 0 <= low <= threshold, got low={low}, threshold={threshold}")
        self.threshold = threshold
        self.low = low
        self.match_iou = match_iou
        self.low_iou = low_iou
        self.margin_per_s = margin_per_s
        self.max_margin = max_margin
        self.max_age_s = max_age_s
        self.next_id = first_id
        self.tracks: List[Track] = []

    # -- queries ---------------------------------------------------------------------------
    def active(self) -> List[Track]:
        """The tracks matched at the latest update (what is drawn and carried), by id."""
        return [t for t in self.tracks if t.active]

    def by_id(self) -> Dict[int, Track]:
        return {t.id: t for t in self.tracks}

    # -- changes ---------------------------------------------------------------------------
    def clear(self) -> None:
        """End every track (a scene cut, a reconnect). Ids already given are never reused."""
        self.tracks = []

    def update(self, detections: Detections, time: float, index: int = -1) -> np.ndarray:
        """Track ids (int64, one per detection row, in row order; -1: none) for the model's
        answer on the frame at `time` (seconds; `index`: that frame's index, kept on the
        tracks). Tracks matched are corrected with the detection's box; the rest become lost or,
        unmatched for more than max_age_s, are forgotten."""
        ids = np.full(len(detections), NO_ID, np.int64)
        boxes, labels, scores = detections.boxes, detections.labels, detections.scores
        high = np.flatnonzero(scores >= self.threshold)
        low = np.flatnonzero((scores >= self.low) & (scores < self.threshold))
        pool = [t for t in self.tracks if time - t.matched_time <= self.max_age_s]  # too old: forgotten
        was_active = {t.id for t in pool if t.active}
        predicted = np.array([t.kalman.predict(time) for t in pool]).reshape(-1, 4)
        carried = np.array([t.box if t.box_time == time else p for t, p in zip(pool, predicted)]).reshape(-1, 4)
        estimates = np.stack([carried, predicted])  # 2 x tracks x 4: either may match
        margins = np.array([min(self.max_margin, self.margin_per_s * max(0.0, time - t.matched_time))
                            for t in pool])

        # Round 1: high-scored detections against every track.
        pairs, left_tracks, left_high = self._match(pool, estimates, margins, high, boxes, labels, self.match_iou)
        matched = {}
        for r, c in pairs:
            matched[r] = high[c]
        # Round 2: the active tracks left over against the low-scored detections.
        rest = [r for r in left_tracks if pool[r].id in was_active]
        pairs2, _, _ = self._match([pool[r] for r in rest], estimates[:, rest], np.zeros(len(rest)), low,
                                   boxes, labels, self.low_iou)
        for r, c in pairs2:
            matched[rest[r]] = low[c]

        for r, track in enumerate(pool):
            track.active = r in matched
            if track.active:
                row = matched[r]
                box = boxes[row].astype(np.float64)
                track.kalman.update(box, time)
                track.move(box, time)
                track.score = float(scores[row])
                track.matched_time = time
                track.matched_index = index
                track.hits += 1
                ids[row] = track.id
        for c in left_high:
            row = high[c]
            pool.append(self._start(boxes[row], int(labels[row]), float(scores[row]), time, index))
            ids[row] = pool[-1].id
        self.tracks = pool
        return ids

    def _start(self, box: np.ndarray, label: int, score: float, time: float, index: int) -> Track:
        box = np.asarray(box, np.float64)
        track = Track(id=self.next_id, label=label, score=score, box=box, box_time=time,
                      kalman=BoxKalman(box, time), matched_time=time, matched_index=index)
        self.next_id += 1
        return track

    @staticmethod
    def _match(tracks: List[Track], estimates: np.ndarray, margins: np.ndarray, rows: np.ndarray,
               boxes: np.ndarray, labels: np.ndarray, min_iou: float):
        """Optimal matching of tracks to the detections `rows` (same label, IoU >= min_iou).
        estimates: (E, tracks, 4), E estimates of each track's box; a pair's IoU is the best
        over them (the carried box and the Kalman prediction: flow follows the object in front
        when two cross, the Kalman model keeps each one's own motion)."""
        if not len(tracks) or not len(rows):
            return [], list(range(len(tracks))), list(range(len(rows)))
        iou = np.max([iou_matrix(e, boxes[rows], margins) for e in estimates], axis=0)
        cost = 1.0 - iou
        track_labels = np.array([t.label for t in tracks])
        cost[track_labels[:, None] != labels[rows][None, :]] = FORBIDDEN
        cost[iou < min_iou] = FORBIDDEN
        return assign(cost, 1.0 - min_iou)
