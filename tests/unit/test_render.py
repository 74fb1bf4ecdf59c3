"""streamer.render.draw_detections: a pure function, RGB colors, threshold, labels, clipping."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.frames import Detections
from streamer.render import PALETTE, color_for, draw_detections


def names(label: int) -> str:
    return {1: "person", 3: "car"}.get(label, f"class {label}")


def gray(h: int = 120, w: int = 160, value: int = 128) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def one(box, label=1, score=0.9) -> Detections:
    return Detections(np.array([box], np.float32), np.array([label]), np.array([score]))


def test_returns_a_new_array_and_leaves_the_input_unchanged():
    image = gray()
    before = image.copy()
    out = draw_detections(image, one([20, 40, 100, 100]), names)
    assert out is not image
    assert not np.shares_memory(out, image)
    np.testing.assert_array_equal(image, before)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image), "something was drawn"


def test_person_box_is_red_in_rgb():
    # Catches BGR/RGB mix-ups: label 1's palette color is red (230, 25, 25) in RGB.
    assert color_for(1) == (230, 25, 25)
    image = gray(value=0)
    out = draw_detections(image, one([20, 40, 100, 100], label=1), names)
    # Edge pixels of the box, away from the label text drawn at the top.
    for y, x in [(70, 20), (70, 100), (100, 60), (40 + 15, 20)]:
        r, g, b = (int(v) for v in out[y, x])
        assert r > 200 and g < 60 and b < 60, f"pixel {(y, x)} is {(r, g, b)}, expected red"
    # Inside the box: untouched.
    assert out[70, 60].tolist() == [0, 0, 0]


def test_blue_palette_color_is_blue_in_rgb():
    label = PALETTE.index((0, 130, 200))
    out = draw_detections(gray(value=0), one([20, 40, 100, 100], label=label), names)
    r, g, b = (int(v) for v in out[100, 60])
    assert b > 150 and r < 60


def test_threshold_hides_lower_scored_boxes():
    image = gray()
    d = Detections(
        np.array([[10, 30, 50, 80], [90, 30, 150, 110]], np.float32), np.array([1, 3]), np.array([0.4, 0.8]))
    out = draw_detections(image, d, names, threshold=0.5)
    # The 0.4 box's edges stay untouched; the 0.8 box is drawn.
    assert out[55, 10].tolist() == [128, 128, 128]
    assert out[55, 30].tolist() == [128, 128, 128]
    assert out[110, 120].tolist() != [128, 128, 128]
    both = draw_detections(image, d, names, threshold=0.3)
    assert both[55, 10].tolist() != [128, 128, 128]


def test_nothing_passing_the_threshold_gives_an_identical_copy():
    image = gray()
    out = draw_detections(image, one([10, 10, 50, 50], score=0.3), names, threshold=0.5)
    assert out is not image
    np.testing.assert_array_equal(out, image)


def test_score_equal_to_threshold_is_shown():
    image = gray()
    out = draw_detections(image, one([10, 30, 60, 90], score=0.5), names, threshold=0.5)
    assert not np.array_equal(out, image)


def test_empty_detections_return_an_equal_copy():
    image = gray()
    out = draw_detections(image, Detections.empty(), names)
    assert out is not image
    np.testing.assert_array_equal(out, image)


def test_color_for_is_stable_and_differs_for_neighbours():
    for label in range(0, 91):
        assert color_for(label) == color_for(label)
        assert color_for(np.int64(label)) == color_for(label)
        assert color_for(label) != color_for(label + 1)
        assert all(0 <= c <= 255 for c in color_for(label))


def test_same_label_same_color_on_every_frame():
    a = draw_detections(gray(value=0), one([20, 40, 100, 100], label=3), names)
    b = draw_detections(gray(value=0), one([30, 50, 110, 110], label=3, score=0.6), names)
    np.testing.assert_array_equal(a[70, 20], b[80, 30])


def test_label_text_is_drawn_above_the_box():
    image = gray()
    out = draw_detections(image, one([20, 60, 140, 110]), names)
    above = out[:60, 20:140]
    assert not np.array_equal(above, image[:60, 20:140]), "no label above the box"
    # The label background is the class color.
    assert (np.all(above == np.array(color_for(1), np.uint8), axis=-1)).sum() > 50
    # The label names the class: different text draws different pixels.
    other = draw_detections(image, one([20, 60, 140, 110], label=3), lambda label: "zebra-crossing")
    assert not np.array_equal(other[:60, 20:140], above)


def test_names_are_asked_for_each_label():
    asked = []

    def name_of(label):
        asked.append(label)
        return str(label)

    d = Detections(np.array([[10, 30, 50, 80], [60, 30, 150, 110]], np.float32), np.array([7, 44]),
                   np.array([0.9, 0.8]))
    draw_detections(gray(), d, name_of)
    assert sorted(asked) == [7, 44]
    assert all(isinstance(a, int) for a in asked)


@pytest.mark.parametrize("box", [
    [-50, -40, 60, 50],  # top-left outside
    [100, 80, 400, 300],  # bottom-right outside
    [-10, -10, 500, 500],  # larger than the image
    [500, 500, 600, 600],  # entirely outside
    [80, 60, 40, 20],  # corners swapped
    [5, 5, 5, 5],  # degenerate
])
def test_boxes_outside_the_image_are_clipped(box):
    image = gray()
    out = draw_detections(image, one(box), names)
    assert out.shape == image.shape and out.dtype == np.uint8


def test_clipped_box_is_drawn_on_the_border():
    out = draw_detections(gray(value=0), one([-50, 60, 80, 200]), names)
    # Left edge clipped to x = 0, bottom to y = h - 1.
    r, g, b = (int(v) for v in out[100, 0])
    assert r > 200 and g < 60 and b < 60
    r, g, b = (int(v) for v in out[119, 40])
    assert r > 200 and g < 60 and b < 60


def test_tiny_image_does_not_fail():
    image = gray(8, 8)
    out = draw_detections(image, one([1, 1, 6, 6]), names)
    assert out.shape == (8, 8, 3)
