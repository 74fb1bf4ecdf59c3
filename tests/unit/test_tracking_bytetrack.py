"""The ByteTrack-style Tracker on recorded box sequences: matching, the low-score round, ageing by
time, per-class matching, ids unique and never reused, boxes never changed."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.frames import Detections
from streamer.tracking.bytetrack import NO_ID, Tracker


def dets(*rows) -> Detections:
    """Detections from (x1, y1, x2, y2, label, score) rows."""
    rows = np.array(rows, np.float64).reshape(-1, 6)
    return Detections(rows[:, :4], rows[:, 4].astype(np.int64), rows[:, 5])


def box_at(x: float, y: float = 100, w: float = 40, h: float = 60, label: int = 1, score: float = 0.9):
    return (x, y, x + w, y + h, label, score)


# Two people walking right at 50 px/s (one above the other) and a car standing still, recorded at
# uneven times (a live camera's gaps), the rows in a different order each time.
RECORDED = [
    (0.00, [box_at(100), box_at(100, 300), box_at(400, 200, 120, 60, label=3)]),
    (0.35, [box_at(400, 200, 120, 60, label=3), box_at(117.5, 300), box_at(117.5)]),
    (0.50, [box_at(125), box_at(400, 200, 120, 60, label=3), box_at(125, 300)]),
    (1.10, [box_at(155, 300), box_at(155), box_at(401, 201, 120, 60, label=3)]),
    (1.30, [box_at(165), box_at(165, 300), box_at(399, 199, 120, 60, label=3)]),
]


def test_ids_follow_the_objects_not_the_row_order():
    tracker = Tracker()
    by_object = {}
    for time, rows in RECORDED:
        ids = tracker.update(dets(*rows), time)
        assert len(set(ids)) == len(ids) and (ids > 0).all()
        for row, track_id in zip(rows, ids):
            key = ("car" if row[4] == 3 else "top" if row[1] < 200 else "bottom")
            by_object.setdefault(key, set()).add(int(track_id))
    assert by_object == {"top": {1}, "bottom": {2}, "car": {3}}


def test_a_new_object_gets_a_new_id_at_once():
    tracker = Tracker()
    tracker.update(dets(box_at(100)), 0.0)
    ids = tracker.update(dets(box_at(102), box_at(300)), 0.1)
    assert list(ids) == [1, 2]


def test_update_never_changes_the_detections():
    tracker = Tracker()
    first = dets(box_at(100), box_at(300, score=0.3))
    before = (first.boxes.copy(), first.labels.copy(), first.scores.copy())
    tracker.update(first, 0.0)
    tracker.update(first, 0.1)
    assert all(np.array_equal(a, b) for a, b in zip(before, (first.boxes, first.labels, first.scores)))


def test_low_scored_box_keeps_its_track_in_the_second_round():
    tracker = Tracker(threshold=0.5, low=0.1)
    assert list(tracker.update(dets(box_at(100)), 0.0)) == [1]
    # The score dips below the threshold: round 2 keeps the track (and its id).
    assert list(tracker.update(dets(box_at(104, score=0.3)), 0.1)) == [1]
    assert tracker.tracks[0].score == pytest.approx(0.3)
    assert list(tracker.update(dets(box_at(108)), 0.2)) == [1]


def test_low_scored_box_alone_starts_nothing_and_gets_no_id():
    tracker = Tracker(threshold=0.5, low=0.1)
    ids = tracker.update(dets(box_at(100, score=0.3), box_at(300, score=0.05)), 0.0)
    assert list(ids) == [NO_ID, NO_ID] and tracker.tracks == []
    assert list(tracker.update(dets(box_at(100)), 0.1)) == [1]  # ids were not spent on them


def test_second_round_needs_a_close_overlap_and_takes_active_tracks_only():
    tracker = Tracker(threshold=0.5, low=0.1, low_iou=0.5)
    tracker.update(dets(box_at(100)), 0.0)
    # A weak box that overlaps the track only a little does not take it.
    assert list(tracker.update(dets(box_at(125, score=0.3)), 0.1)) == [NO_ID]
    # The track is lost now; a weak box right on it still gets nothing (lost tracks: round 1 only).
    assert list(tracker.update(dets(box_at(100, score=0.3)), 0.2)) == [NO_ID]
    # A strong one does: the lost track is found again.
    assert list(tracker.update(dets(box_at(100)), 0.3)) == [1]


def test_high_scored_boxes_are_matched_before_low_ones():
    tracker = Tracker(threshold=0.5, low=0.1)
    tracker.update(dets(box_at(100)), 0.0)
    ids = tracker.update(dets(box_at(101, score=0.3), box_at(103, score=0.8)), 0.1)
    assert list(ids) == [NO_ID, 1]


def test_ageing_counts_missed_answers_and_seconds():
    tracker = Tracker(max_age_s=2.0, max_misses=10)
    tracker.update(dets(box_at(100)), 0.0)
    for i in range(1, 200):  # many empty answers within 1.9 s: the track is lost, not forgotten
        tracker.update(Detections.empty(), i * 0.0095)
    assert [t.id for t in tracker.tracks] == [1] and not tracker.tracks[0].active
    assert list(tracker.update(dets(box_at(100)), 1.95)) == [1]
    # Answers 3.8 s apart (a slow model on a CPU): a few missed answers do not forget it, whatever
    # the seconds (a fixed 2 s gave every box a new id at every answer).
    for k in range(1, 4):
        tracker.update(Detections.empty(), 1.95 + 3.8 * k)
    assert list(tracker.update(dets(box_at(101)), 1.95 + 3.8 * 4)) == [1]
    # More than 10 answers missed and more than 2 s: forgotten; the same place gets a new id.
    t = 1.95 + 3.8 * 4
    for k in range(1, 12):
        tracker.update(Detections.empty(), t + 0.25 * k)
    assert tracker.tracks == []
    assert list(tracker.update(dets(box_at(100)), t + 3.0)) == [2]


def test_matching_is_per_class():
    tracker = Tracker()
    tracker.update(dets(box_at(100, label=1), box_at(300, label=3)), 0.0)
    # Same places, classes swapped: neither box may take the other class's track.
    ids = tracker.update(dets(box_at(100, label=3), box_at(300, label=1)), 0.1)
    assert set(ids) == {3, 4}
    # Two classes on the same spot keep their own ids.
    tracker = Tracker()
    first = tracker.update(dets(box_at(100, label=1), box_at(102, label=2)), 0.0)
    again = tracker.update(dets(box_at(103, label=2), box_at(101, label=1)), 0.1)
    assert list(again) == [first[1], first[0]]


def test_ids_are_never_reused():
    tracker = Tracker(max_age_s=0.5, max_misses=0)
    seen = []
    for step in range(6):
        time = step * 1.0  # every track misses one answer, then is forgotten before the next
        seen += list(tracker.update(dets(box_at(100), box_at(300)), time))
        tracker.update(Detections.empty(), time + 0.6)
        if step == 3:
            tracker.clear()  # a scene cut: still no id comes back
    assert len(seen) == len(set(seen)) == 12


def test_optimal_assignment_keeps_both_ids_where_greedy_would_lose_one():
    # Tracks A at x=100 and B at x=136 (40 wide). New boxes: one at 111 (IoU 0.57 with A, the
    # best pair; 0.23 with B) and one at 88 (0.54 with A, none with B). Greedy gives A the box at
    # 111 and leaves B with nothing (a new id for the box at 88); the optimal matching gives
    # A the box at 88 and B the one at 111.
    tracker = Tracker(match_iou=0.2, margin_per_s=0.0)
    tracker.update(dets(box_at(100), box_at(136)), 0.0)
    ids = tracker.update(dets(box_at(111), box_at(88)), 0.0)
    assert list(ids) == [2, 1]


def test_clear_ends_every_track():
    tracker = Tracker()
    tracker.update(dets(box_at(100)), 0.0)
    tracker.clear()
    assert tracker.tracks == [] and list(tracker.update(dets(box_at(100)), 0.1)) == [2]


def test_threshold_must_not_be_below_low():
    with pytest.raises(ValueError):
        Tracker(threshold=0.2, low=0.3)
