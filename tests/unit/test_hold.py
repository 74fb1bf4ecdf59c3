"""--hold-detections: an answer arrives after its own frame was shown; it is drawn on the first
frame shown after it arrives, then while recent enough (0: that first frame only), with the
tracker (LiveTracker's carry limit) and without it (HoldDetections)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from streamer.frames import Detections, Frame
from streamer.selection import HoldDetections
from streamer.tracking import LiveTracker

from ..tracking_clips import render, straight

BOXES = Detections(np.array([[10, 10, 50, 50]], np.float32), np.array([1]), np.array([0.9], np.float32))


def frame(index: int) -> Frame:
    return Frame(index, index, Fraction(1, 25), index / 25, np.zeros((4, 4, 3), np.uint8))


def drawn(stage, f) -> int:
    ((_, detections),) = list(stage.push(f, None))
    return 0 if detections is None else len(detections)


@pytest.mark.parametrize("hold, expected", [
    (0, [1, 0, 0, 0, 0, 0, 0, 0]),  # the first frame shown after the answer only
    (0.1, [1, 0, 0, 0, 0, 0, 0, 0]),  # the answer is 0.2 s late: older than the hold at once
    (0.3, [1, 1, 1, 0, 0, 0, 0, 0]),  # frames 5, 6, 7 are within 0.3 s of frame 0 (0.20, 0.24, 0.28 s)
    (None, [1] * 8),  # the default: at least 2 s
])
def test_a_late_answer_is_drawn_on_the_first_frame_shown_after_it(hold, expected):
    stage = HoldDetections(hold)
    for i in range(5):  # frames 0-4 shown before the answer for frame 0 arrives
        assert drawn(stage, frame(i)) == 0
    stage.answer(frame(0), BOXES)
    assert [drawn(stage, frame(i)) for i in range(5, 13)] == expected
    stage.answer(frame(10), BOXES)  # each answer is drawn once at least
    assert drawn(stage, frame(13)) == 1
    stage.reset()
    assert drawn(stage, frame(14)) == 0


def test_the_tracker_with_hold_zero_draws_each_late_answer_once():
    frames, truth = render(straight(20))
    stage = LiveTracker(max_carry_s=0)
    for f in frames[:6]:
        assert drawn(stage, f) == 0
    stage.answer(frames[2], truth.detections(2))  # four frames late
    assert [drawn(stage, f) for f in frames[6:10]] == [2, 0, 0, 0]
    stage.answer(frames[8], truth.detections(8))
    assert [drawn(stage, f) for f in frames[10:12]] == [2, 0]
