"""Zones and lines alone: coordinates, point in polygon, the direction rule, segment crossings,
and the checks of bad shapes (no picture, then at the first frame)."""

import numpy as np
import pytest

from streamer.events.config import Anchor, Coord, RegionsError, parse_coord, regions
from streamer.events.geometry import OutsidePicture, anchors, crosses, inside, polygon_problem, resolve, side

SQUARE = np.array([[100, 100], [200, 100], [200, 200], [100, 200]], float)


def test_coordinates_are_pixels_or_percentages():
    assert parse_coord(330, "x") == Coord(330.0)
    assert parse_coord(12.5, "x") == Coord(12.5)
    assert parse_coord("50%", "x") == Coord(0.5, fraction=True)
    assert parse_coord(" 12.5 % ", "x") == Coord(0.125, fraction=True)
    for bad in ("50", "half", True, None, "50%%"):
        with pytest.raises(RegionsError, match="a coordinate is a number of pixels or a percentage"):
            parse_coord(bad, "x")


def test_percentages_resolve_against_the_picture():
    found = regions(None, {"door": {"points": [["50%", 0], ["50%", "100%"]]}}, "")
    resolved = resolve(found, 640, 480)
    assert resolved.lines[0].points.tolist() == [[320, 0], [320, 480]]
    assert resolve(found, 1280, 720).lines[0].points.tolist() == [[640, 0], [640, 720]]


def test_inside_counts_the_border_and_follows_concave_shapes():
    pts = np.array([[150, 150], [100, 150], [200, 200], [99.9, 150], [250, 150], [150, 99]], float)
    assert inside(pts, SQUARE).tolist() == [True, True, True, False, False, False]
    # An L shape: the notch is outside.
    ell = np.array([[0, 0], [100, 0], [100, 40], [40, 40], [40, 100], [0, 100]], float)
    assert inside(np.array([[20, 80], [80, 20], [80, 80]], float), ell).tolist() == [True, True, False]


def test_the_in_side_is_the_right_hand_side_of_p1_to_p2_as_drawn():
    down = np.array([[330, 0], [330, 480]], float)  # drawn top to bottom: `in` is on the left
    assert np.sign(side(np.array([[300, 100], [360, 100]], float), down)).tolist() == [1, -1]
    right = np.array([[0, 240], [640, 240]], float)  # drawn left to right: `in` is below
    assert np.sign(side(np.array([[10, 300], [10, 200]], float), right)).tolist() == [1, -1]
    assert side(np.array([[330, 50]], float), down)[0] == 0


def test_a_path_counts_only_through_the_segment_not_the_infinite_line():
    line = np.array([[100, 0], [100, 100]], float)
    a = np.array([[90, 50], [90, 150], [90, 100], [100, 50], [90, 50]], float)
    b = np.array([[110, 50], [110, 150], [110, 100], [120, 50], [95, 50]], float)
    assert crosses(a, b, line).tolist() == [True, False, True, True, False]


def test_anchors():
    box = np.array([[10, 20, 30, 60]], float)
    assert anchors(box, Anchor.BOTTOM).tolist() == [[20, 60]]
    assert anchors(box, Anchor.CENTER).tolist() == [[20, 40]]
    assert anchors(box, Anchor.TOP).tolist() == [[20, 20]]


def test_bad_polygons_say_why():
    assert polygon_problem(SQUARE) is None
    assert "crosses itself" in polygon_problem([[0, 0], [100, 100], [100, 0], [0, 100]])
    assert "same point" in polygon_problem([[0, 0], [10, 0], [0, 0], [5, 5]])
    assert "no area" in polygon_problem([[0, 0], [10, 10], [20, 20]])


@pytest.mark.parametrize("zones, lines, message", [
    ({"a": {"points": [[0, 0], [10, 0]]}}, None, r"cam.zones.a.points: a zone needs at least 3 points \(got 2\)"),
    ({"a": {"points": [[0, 0], [100, 100], [100, 0], [0, 100]]}}, None, "cam.zones.a.points: the polygon crosses itself"),
    (None, {"l": {"points": [[5, 5], [5, 5]]}}, "cam.lines.l.points: the line's two points are the same"),
    (None, {"l": {"points": [[5, 5], [6, 6], [7, 7]]}}, "cam.lines.l.points: a line is two points"),
    (None, {"l": {"points": [[5, 5], ["x", 6]]}}, r"cam.lines.l.points\[1\]: a coordinate is"),
    (None, {"l": {"points": [[5, 5], [6]]}}, r"cam.lines.l.points\[1\]: a point is \[x, y\]"),
    ({"bad name": {"points": [[0, 0], [10, 0], [0, 10]]}}, None, "cam.zones.bad name: the name must be"),
])
def test_bad_shapes_name_their_field(zones, lines, message):
    with pytest.raises(RegionsError, match=message):
        regions(zones, lines, "cam")


def test_what_only_the_picture_shows_is_checked_at_the_first_frame():
    found = regions({"yard": {"points": [[0, 300], [700, 300], [640, 480]]}}, None, "cameras.front")
    with pytest.raises(OutsidePicture, match=r"cameras.front.zones.yard.points: point 1 \[700, 300\] is outside "
                                             r"the 640x480 picture"):
        resolve(found, 640, 480)
    assert resolve(found, 800, 600).zones[0].name == "yard"
    assert OutsidePicture("x").exit_code == 3
    # Mixed units can only be checked on the picture: a line of no length there.
    mixed = regions(None, {"l": {"points": [["50%", 10], [320, 10]]}}, "")
    with pytest.raises(OutsidePicture, match="lines.l.points: on the 640x480 picture the line has no length"):
        resolve(mixed, 640, 480)
    assert resolve(mixed, 800, 600).lines[0].points.tolist() == [[400, 10], [320, 10]]
