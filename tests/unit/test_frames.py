"""streamer.frames: Detections (lengths, dtypes, filtering) and Frame (time, BGR/RGB)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from streamer.frames import Detections, Frame, from_bgr, to_bgr


def sample() -> Detections:
    return Detections(
        boxes=[[0, 0, 10, 10], [1, 1, 5, 5], [2, 2, 8, 9], [3, 3, 4, 4]],
        labels=[1, 3, 1, 44],
        scores=[0.9, 0.5, 0.49, 0.7],
    )


# -- Detections --------------------------------------------------------------------------


@pytest.mark.parametrize("n_boxes,n_labels,n_scores", [(2, 1, 1), (1, 2, 1), (1, 1, 2), (0, 1, 0)])
def test_length_mismatch_raises(n_boxes, n_labels, n_scores):
    with pytest.raises(ValueError, match="length"):
        Detections(np.zeros((n_boxes, 4)), np.zeros(n_labels), np.zeros(n_scores))


def test_dtypes_are_coerced():
    d = Detections(
        boxes=np.array([[1, 2, 3, 4]], dtype=np.int32),
        labels=np.array([5.0]),
        scores=[1],
    )
    assert d.boxes.dtype == np.float32 and d.boxes.shape == (1, 4)
    assert d.labels.dtype == np.int64 and d.labels.shape == (1,)
    assert d.scores.dtype == np.float32 and d.scores.shape == (1,)
    assert d.boxes.tolist() == [[1, 2, 3, 4]]
    assert d.labels.tolist() == [5]


def test_flat_boxes_are_reshaped_to_n_by_4():
    d = Detections(np.arange(8), [1, 2], [0.1, 0.2])
    assert d.boxes.shape == (2, 4)
    assert d.boxes[1].tolist() == [4, 5, 6, 7]


def test_empty():
    d = Detections.empty()
    assert len(d) == 0
    assert d.boxes.shape == (0, 4) and d.boxes.dtype == np.float32
    assert d.labels.shape == (0,) and d.labels.dtype == np.int64
    assert d.scores.shape == (0,) and d.scores.dtype == np.float32


def test_above_keeps_scores_at_or_over_threshold():
    d = sample()
    kept = d.above(0.5)
    assert kept.scores.tolist() == pytest.approx([0.9, 0.5, 0.7])
    assert kept.labels.tolist() == [1, 3, 44]
    assert kept.boxes.tolist() == [[0, 0, 10, 10], [1, 1, 5, 5], [3, 3, 4, 4]]
    assert len(d.above(0.95)) == 0
    assert len(d.above(0.0)) == 4


def test_with_labels_none_keeps_all():
    d = sample()
    kept = d.with_labels(None)
    assert len(kept) == 4
    assert kept.labels.tolist() == d.labels.tolist()


def test_with_labels_masks():
    d = sample()
    kept = d.with_labels([1, 44])
    assert kept.labels.tolist() == [1, 1, 44]
    assert kept.scores.tolist() == pytest.approx([0.9, 0.49, 0.7])
    assert kept.boxes.tolist() == [[0, 0, 10, 10], [2, 2, 8, 9], [3, 3, 4, 4]]
    assert len(d.with_labels([])) == 0
    assert d.with_labels(iter([3])).labels.tolist() == [3]  # any iterable


def test_filtering_returns_new_objects_and_never_mutates():
    d = sample()
    before = (d.boxes.copy(), d.labels.copy(), d.scores.copy())
    above = d.above(0.6)
    labelled = d.with_labels([1])
    assert above is not d and labelled is not d
    assert len(d) == 4
    np.testing.assert_array_equal(d.boxes, before[0])
    np.testing.assert_array_equal(d.labels, before[1])
    np.testing.assert_array_equal(d.scores, before[2])
    # The filtered copy does not share memory with the original.
    above.boxes[0, 0] = 999
    assert d.boxes[0, 0] == 0


def test_detections_are_frozen():
    d = sample()
    with pytest.raises(Exception):
        d.scores = np.zeros(4)  # type: ignore[misc]


# -- Frame -------------------------------------------------------------------------------


def test_frame_time_from_pts_and_time_base():
    img = np.zeros((2, 2, 3), np.uint8)
    f = Frame(index=3, pts=3003, time_base=Fraction(1, 30000), wall_time=0.0, image=img)
    assert f.time == pytest.approx(0.1001)
    assert Frame(0, 1500, Fraction(1, 1000), 0.0, img).time == pytest.approx(1.5)
    assert Frame(0, None, Fraction(1, 1000), 0.0, img).time is None
    assert Frame(0, 10, None, 0.0, img).time is None


def test_from_bgr_pure_blue_becomes_rgb_blue():
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's BGR
    rgb = from_bgr(bgr)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [0, 0, 255]
    assert rgb.flags["C_CONTIGUOUS"]


def test_to_bgr_and_back_roundtrip():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    bgr = to_bgr(rgb)
    assert bgr[..., 0].tolist() == rgb[..., 2].tolist()
    assert bgr.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(from_bgr(bgr), rgb)
    red = np.zeros((1, 1, 3), np.uint8)
    red[0, 0] = (255, 0, 0)
    assert to_bgr(red)[0, 0].tolist() == [0, 0, 255]


def test_from_bgr_gray():
    gray = np.array([[0, 100], [200, 255]], np.uint8)
    rgb = from_bgr(gray)
    assert rgb.shape == (2, 2, 3)
    assert rgb[1, 0].tolist() == [200, 200, 200]
    assert rgb[0, 1].tolist() == [100, 100, 100]


def test_from_bgr_bgra_drops_alpha():
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 0] = 10  # B
    bgra[..., 1] = 20  # G
    bgra[..., 2] = 30  # R
    bgra[..., 3] = 99  # alpha
    rgb = from_bgr(bgra)
    assert rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [30, 20, 10]
