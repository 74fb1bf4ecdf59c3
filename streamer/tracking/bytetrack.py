"""ByteTrack-style association: ids for the model's boxes, tracks kept between inferences.

One `Tracker` per camera. `update(detections, time)` gives every detection row a track id (or
-1) and never changes a box: the ids are a column added to the model's own boxes (the fidelity
rule). Matching, in two rounds as ByteTrack does:

1. detections scored >= `threshold` against every track (active and lost), by IoU with the
   track's box estimated for this time: the better of what the stage carried it to (optical
   flow) and the Kalman prediction, both boxes of a pair enlarged in proportion to how long ago
   the track was last matched (its estimate is less certain);
   then the high-scored detections and the tracks left over, by **motion-gated distance**: the
   detection's centre within what the time since the track's last match allows (`gate_base` +
   `max_speed` box sizes a second, at most `max_gate` box sizes, from either estimate's centre;
   the size is the largest the track's boxes had, as an object going behind something shows a
   shrinking part of itself) and a similar size: the width or the height within `max_size_ratio`
   of its last matched box's (a box cut by an obstacle or the picture's edge keeps the other). This finds an object that moved more than its own
   size since it was last matched where IoU sees no overlap: a plain object that optical flow
   cannot follow (a new track has no velocity yet), answers far apart, one that reappears after
   being hidden behind another of its class;
2. the active tracks left over against the low-scored detections (`low` <= score <
   `threshold`), by plain IoU >= `low_iou`: a box whose score dipped keeps its track.

All rounds match only equal labels and take the optimal assignment. A high-scored detection
left over starts a new track with a new id at once. A low-scored one left over gets id -1 and
starts nothing (it is below the threshold, so it is not drawn; a weak box never spawns a
track). Ids count up from `first_id` and are never reused, not even after `clear()`.

Ageing is by the answers a track missed, not by a fixed wall time: a track is forgotten once it
has missed more than `max_misses` updates (the model's answers) *and* gone unmatched for more
than `max_age_s` seconds. So tracks outlive the gap between answers however far apart they are
(a slow model, `--infer-every 75`, a 5 fps file inferred every 15th frame), and at a high
answer rate they are kept `max_age_s` as before. Times come from the stage (media time in
files, capture time live).

Exact: the ids' assignment given the estimates. Estimated: the boxes tracks are matched
against (Kalman prediction, optical flow).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from ..frames import Detections
from .assign import FORBIDDEN, assign, iou_matrix
from .kalman import BoxKalman

NO_ID = -1
MAX_MISSES = 10  # a track is forgotten once it missed more than this many answers ...
MAX_AGE_S = 2.0  # ... and was not matched for more than this many seconds


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
    missed: int = 0  # updates (answers) since it was last matched
    size: float = 0.0  # the largest sqrt(w * h) of its matched boxes (a part hidden shrinks a box)
    matched_box: Optional[np.ndarray] = field(default=None, repr=False)  # its last matched detection's box

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


def box_size(box: np.ndarray) -> float:
    """sqrt(w * h) of a box (x1 y1 x2 y2), 1e-6 at least."""
    return float(np.sqrt(max(box[2] - box[0], 1e-6) * max(box[3] - box[1], 1e-6)))


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
    gate_base, max_speed, max_gate: the distance round's gate, in box sizes (sqrt(w * h) of the
        track's box): gate_base + max_speed per second since its last match, at most max_gate.
    max_size_ratio: the distance round pairs boxes whose widths or heights differ by at most this factor.
    max_misses, max_age_s: a track is forgotten once it missed more than max_misses updates and
        was not matched for more than max_age_s seconds.
    first_id: the first id handed out.
    """

    def __init__(self, threshold: float = 0.5, low: float = 0.1, match_iou: float = 0.2, low_iou: float = 0.5,
                 margin_per_s: float = 1.0, max_margin: float = 0.5, max_age_s: float = MAX_AGE_S, first_id: int = 1,
                 max_misses: int = MAX_MISSES, gate_base: float = 0.5, max_speed: float = 6.0, max_gate: float = 3.0,
                 max_size_ratio: float = 1.5):
        if not 0 <= low <= threshold:
            raise ValueError(f"need 0 <= low <= threshold, got low={low}, threshold={threshold}")
        self.threshold = threshold
        self.low = low
        self.match_iou = match_iou
        self.low_iou = low_iou
        self.margin_per_s = margin_per_s
        self.max_margin = max_margin
        self.max_age_s = max_age_s
        self.max_misses = max_misses
        self.gate_base = gate_base
        self.max_speed = max_speed
        self.max_gate = max_gate
        self.max_size_ratio = max_size_ratio
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
        tracks). Tracks matched are corrected with the detection's box; the rest become lost
        (and are forgotten once they missed more than max_misses answers and max_age_s seconds)."""
        ids = np.full(len(detections), NO_ID, np.int64)
        boxes, labels, scores = detections.boxes, detections.labels, detections.scores
        high = np.flatnonzero(scores >= self.threshold)
        low = np.flatnonzero((scores >= self.low) & (scores < self.threshold))
        pool = [t for t in self.tracks if not self._expired(t, time)]
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
        # ... then the leftovers by motion-gated distance (an object that moved more than its size).
        pairs_d, left_tracks, left_high = self._match_distance(pool, estimates, left_tracks, left_high, high, boxes,
                                                               labels, time)
        for r, c in pairs_d:
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
                track.missed = 0
                track.matched_box = box
                track.size = max(track.size, box_size(box))
                ids[row] = track.id
            else:
                track.missed += 1
        for c in left_high:
            row = high[c]
            pool.append(self._start(boxes[row], int(labels[row]), float(scores[row]), time, index))
            ids[row] = pool[-1].id
        self.tracks = [t for t in pool if not self._expired(t, time)]
        return ids

    def _expired(self, track: Track, time: float) -> bool:
        """Missed more than max_misses answers and unmatched for more than max_age_s seconds."""
        return track.missed > self.max_misses and time - track.matched_time > self.max_age_s

    def _start(self, box: np.ndarray, label: int, score: float, time: float, index: int) -> Track:
        box = np.asarray(box, np.float64)
        track = Track(id=self.next_id, label=label, score=score, box=box, box_time=time,
                      kalman=BoxKalman(box, time), matched_time=time, matched_index=index, size=box_size(box),
                      matched_box=box)
        self.next_id += 1
        return track

    def _match_distance(self, pool: List[Track], estimates: np.ndarray, left_tracks: List[int], left_high: List[int],
                        high: np.ndarray, boxes: np.ndarray, labels: np.ndarray, time: float):
        """The tracks and high-scored detections round 1 left (indexes into pool / high), matched by
        the distance of centres within each track's motion gate and by similar size. Returns
        (pairs (pool index, high index), tracks left, detections left)."""
        if not left_tracks or not left_high:
            return [], left_tracks, left_high
        rows = high[left_high]
        det = boxes[rows].astype(np.float64)
        det_c = np.stack([(det[:, 0] + det[:, 2]) / 2, (det[:, 1] + det[:, 3]) / 2], 1)  # (D, 2)
        est = estimates[:, left_tracks]  # (E, T, 4)
        est_c = np.stack([(est[..., 0] + est[..., 2]) / 2, (est[..., 1] + est[..., 3]) / 2], -1)  # (E, T, 2)
        dist = np.min(np.linalg.norm(est_c[:, :, None, :] - det_c[None, None, :, :], axis=-1), axis=0)  # (T, D)
        size = np.array([pool[r].size for r in left_tracks])
        elapsed = np.array([max(0.0, time - pool[r].matched_time) for r in left_tracks])
        gate = size * np.minimum(self.max_gate, self.gate_base + self.max_speed * elapsed)  # (T,)
        cost = dist / gate[:, None]
        last = np.array([pool[r].matched_box for r in left_tracks]).reshape(-1, 4)

        def ratio(axis: int) -> np.ndarray:  # (T, D): how far apart the widths (0) or heights (1) are
            of_track = np.clip(last[:, axis + 2] - last[:, axis], 1e-6, None)[:, None]
            of_det = np.clip(det[:, axis + 2] - det[:, axis], 1e-6, None)[None, :]
            return np.maximum(of_track / of_det, of_det / of_track)

        ratio = np.minimum(ratio(0), ratio(1))
        track_labels = np.array([pool[r].label for r in left_tracks])
        cost[(track_labels[:, None] != labels[rows][None, :]) | (ratio > self.max_size_ratio) | (cost > 1.0)] = FORBIDDEN
        pairs, free_tracks, free_dets = assign(cost, 1.0)
        return ([(left_tracks[t], left_high[d]) for t, d in pairs], [left_tracks[t] for t in free_tracks],
                [left_high[d] for d in free_dets])

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
