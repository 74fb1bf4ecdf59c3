"""The tracker's small parts: IoU, optimal assignment, the Kalman box model, box shifting."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.tracking.assign import FORBIDDEN, assign, iou_matrix
from streamer.tracking.bytetrack import shift_box
from streamer.tracking.kalman import BoxKalman


def test_iou_matrix_values():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [100, 100, 110, 110]])
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 3)
    assert iou[0, 0] == pytest.approx(1.0)
    assert iou[0, 1] == pytest.approx(50 / 150)
    assert iou[0, 2] == 0 and iou[1].max() == 0


def test_iou_of_empty_and_degenerate_boxes():
    assert iou_matrix(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)
    assert iou_matrix(np.array([[5, 5, 5, 5]]), np.array([[5, 5, 5, 5]]))[0, 0] == 0  # no area, no NaN


def test_margins_let_far_boxes_overlap_and_keep_a_perfect_match_at_one():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]])
    b = np.array([[12, 0, 22, 10], [0, 0, 10, 10]])
    iou = iou_matrix(a, b, margins=np.array([0.0, 0.5]))
    assert iou[0, 0] == 0  # no margin: apart
    assert iou[1, 0] > 0.2  # enlarged by half their size on every side: they overlap
    assert iou[1, 1] == pytest.approx(1.0)  # both boxes of a pair grow alike


def test_assign_is_optimal_where_greedy_is_not():
    # Greedy takes the best pair first (row 0 - col 0, cost 0.4) and leaves row 1 with nothing;
    # the optimal matching uses both rows.
    cost = np.array([[0.4, 0.5], [0.45, FORBIDDEN]])
    pairs, rows, cols = assign(cost, limit=0.8)
    assert pairs == [(0, 1), (1, 0)] and rows == [] and cols == []


def test_assign_leaves_pairs_above_the_limit():
    cost = np.array([[0.9, 0.3], [0.95, 0.85]])
    pairs, rows, cols = assign(cost, limit=0.8)
    assert pairs == [(0, 1)] and rows == [1] and cols == [0]
    assert assign(np.zeros((0, 2)), 0.8) == ([], [], [0, 1])


def test_kalman_learns_a_constant_velocity_and_predicts_by_time():
    k = BoxKalman(np.array([0, 0, 20, 40]), 0.0)
    times = [0.0, 0.1, 0.25, 0.3, 0.5, 0.55, 0.8]  # uneven gaps, as live frames come
    for t in times[1:]:
        k.update(np.array([100 * t, 50 * t, 100 * t + 20, 50 * t + 40]), t)
    assert k.velocity()[:2] == pytest.approx([100, 50], abs=5)
    predicted = k.predict(1.3)
    assert predicted == pytest.approx([130, 65, 150, 105], abs=4)
    assert k.time == 0.8  # predict() left the state alone
    assert k.predict(0.2) == pytest.approx(k.predict(0.8))  # never backwards


def test_shift_box_moves_and_scales_about_the_centre():
    # before: centre (5, 5), 10 x 10; after: centre (15, 12), 20 x 20 -> move (10, 7), scale 2.
    moved = shift_box(np.array([10, 10, 30, 50]), np.array([0, 0, 10, 10]), np.array([5, 2, 25, 22]))
    assert moved == pytest.approx([10, -3, 50, 77])  # centre (30, 37), 40 x 80
