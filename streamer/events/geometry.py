"""The geometry of zones and lines, exact and vectorised (numpy, float64).

- `resolve(regions, width, height)`: the settings' coordinates (pixels or percentages) as pixel
  arrays for one picture size; a point outside the picture is an error naming its field (exit 3:
  only the picture shows it).
- `anchors(boxes, anchor)`: the point of each box zones and lines look at.
- `inside(points, polygon)`: point in polygon (crossing number; a point on the border is inside).
- `side(points, line)`: the signed distance to a line's infinite extension, positive on the
  right-hand side of P1 -> P2 as drawn (x right, y down): the `in` side.
- `crosses(a, b, line)`: whether each path a[i] -> b[i] meets the segment between the line's ends
  (touching counts; the infinite line does not).

Nothing here keeps state; `events.stage` holds each object's side, streaks and counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ExitCode, StreamerError
from .config import Anchor, Point, Regions

EPS = 1e-9


class OutsidePicture(StreamerError):
    """A zone or line reaches outside the picture (seen at the first frame)."""

    exit_code = ExitCode.SOURCE


def _segments_meet(p1, p2, q1, q2) -> bool:
    """Two closed segments share a point."""
    return bool(_crosses(*(np.asarray(p, np.float64) for p in (p1, p2, q1, q2))))


def polygon_problem(points: Sequence[Tuple[float, float]]) -> Optional[str]:
    """Why these points make no usable zone (None: they do): a repeated point, edges that cross
    (a self-intersecting polygon), or no area."""
    pts = [tuple(map(float, p)) for p in points]
    n = len(pts)
    if n < 3:
        return f"a zone needs at least 3 points (got {n})"
    for i in range(n):
        for j in range(i + 1, n):
            if abs(pts[i][0] - pts[j][0]) <= EPS and abs(pts[i][1] - pts[j][1]) <= EPS:
                return f"points {i} and {j} are the same point {_show(pts[i])}"
    for i in range(n):
        a1, a2 = pts[i], pts[(i + 1) % n]
        for j in range(i + 1, n):
            if j == i or (j + 1) % n == i or j == (i + 1) % n:
                continue  # neighbouring edges share a point
            b1, b2 = pts[j], pts[(j + 1) % n]
            if _segments_meet(a1, a2, b1, b2):
                return (f"the polygon crosses itself (edge {i}-{(i + 1) % n} meets edge {j}-{(j + 1) % n}); "
                        "list the points in order around the zone")
    area = 0.5 * abs(sum(pts[i][0] * pts[(i + 1) % n][1] - pts[(i + 1) % n][0] * pts[i][1] for i in range(n)))
    if area <= EPS:
        return "the points are on one line: the zone has no area"
    return None


def _show(p) -> str:
    return f"[{p[0]:g}, {p[1]:g}]"


@dataclass(frozen=True)
class Shape:
    """One zone or line in pixels: its name, class names (None: all), anchor and points (K x 2)."""

    name: str
    points: np.ndarray
    classes: Optional[Tuple[str, ...]]
    anchor: Anchor
    min_frames: int = 1
    loiter_s: Optional[float] = None


ANCHORS = (Anchor.BOTTOM, Anchor.CENTER, Anchor.TOP)


@dataclass(frozen=True)
class Resolved:
    """A camera's zones and lines for one picture size, with every shape's arrays made once so a
    frame is a few numpy operations over (objects x shapes), whatever the number of shapes."""

    width: int
    height: int
    zones: Tuple[Shape, ...]
    lines: Tuple[Shape, ...]

    def __post_init__(self):
        lines, zones = self.lines, self.zones
        p1 = np.array([s.points[0] for s in lines], np.float64).reshape(-1, 2)
        p2 = np.array([s.points[1] for s in lines], np.float64).reshape(-1, 2)
        edges_from = [s.points for s in zones]
        edges_to = [np.roll(s.points, -1, axis=0) for s in zones]
        counts = [len(s.points) for s in zones]
        set_ = object.__setattr__
        set_(self, "line_p1", p1)
        set_(self, "line_p2", p2)
        set_(self, "line_length", np.hypot(*(p2 - p1).T) if len(lines) else np.zeros(0))
        set_(self, "line_anchor", np.array([ANCHORS.index(s.anchor) for s in lines], np.int64))
        set_(self, "edge_from", np.concatenate(edges_from) if zones else np.zeros((0, 2)))
        set_(self, "edge_to", np.concatenate(edges_to) if zones else np.zeros((0, 2)))
        set_(self, "edge_zone", np.repeat(np.arange(len(zones)), counts).astype(np.int64))
        set_(self, "zone_start", np.cumsum([0] + counts[:-1]).astype(np.int64) if zones else np.zeros(0, np.int64))
        set_(self, "zone_anchor", np.array([ANCHORS.index(s.anchor) for s in zones], np.int64))
        set_(self, "zone_min_frames", np.array([s.min_frames for s in zones], np.int64))
        loiter = [np.inf if s.loiter_s is None else s.loiter_s for s in zones]
        set_(self, "loiter_s", np.array(loiter, np.float64) if np.isfinite(loiter).any() else None)
        set_(self, "_applies", {})

    def applies(self, name: str) -> Tuple[np.ndarray, np.ndarray]:
        """(lines, zones): which of them count objects of this class."""
        found = self._applies.get(name)
        if found is None:
            found = self._applies[name] = (
                np.array([s.classes is None or name in s.classes for s in self.lines], bool),
                np.array([s.classes is None or name in s.classes for s in self.zones], bool))
        return found

    def sides(self, points: np.ndarray) -> np.ndarray:
        """points (N, L, 2), each object's anchor for each line -> (N, L) signed distances (> 0 on
        the `in` side)."""
        d = self.line_p2 - self.line_p1
        rel = points - self.line_p1[None]
        return (d[None, :, 0] * rel[..., 1] - d[None, :, 1] * rel[..., 0]) / self.line_length[None]

    def crossed(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a, b (N, L, 2): paths a -> b -> (N, L) whether each meets each line's segment."""
        return _crosses(a, b, self.line_p1[None], self.line_p2[None])

    def inside(self, points: np.ndarray) -> np.ndarray:
        """points (N, Z, 2), each object's anchor for each zone -> (N, Z) inside or on the border."""
        if not len(self.zones) or not len(points):
            return np.zeros((len(points), len(self.zones)), bool)
        pts = points[:, self.edge_zone]  # (N, E, 2)
        return _inside_edges(pts, self.edge_from[None], self.edge_to[None], self.zone_start)


def _pixels(points: Sequence[Point], width: int, height: int) -> np.ndarray:
    return np.array([[x.pixels(width), y.pixels(height)] for x, y in points], np.float64).reshape(-1, 2)


def resolve(regions: Regions, width: int, height: int, min_frames: int = 1) -> Resolved:
    """The zones and lines in pixels of a width x height picture. Raises OutsidePicture naming the
    field when a point lies outside it, or (for shapes given partly in percentages) when the shape
    only now shows it crosses itself or has no length."""
    zones: List[Shape] = []
    lines: List[Shape] = []
    for kind, specs, out in (("zones", regions.zones, zones), ("lines", regions.lines, lines)):
        for spec in specs:
            where = regions.field(kind, spec.name, "points")
            pts = _pixels(spec.points, width, height)
            for i, (x, y) in enumerate(pts):
                if not (-EPS <= x <= width + EPS and -EPS <= y <= height + EPS):
                    raise OutsidePicture(
                        f"{where}: point {i} {_show((x, y))} is outside the {width}x{height} picture "
                        f"(pixels of the picture as shown, or percentages like \"50%\")")
            if kind == "zones":
                problem = polygon_problem(pts)
                if problem:
                    raise OutsidePicture(f"{where}: on the {width}x{height} picture {problem}")
                out.append(Shape(spec.name, pts, spec.classes, spec.anchor,
                                 spec.min_frames if spec.min_frames is not None else min_frames, spec.loiter_s))
            else:
                if np.hypot(*(pts[1] - pts[0])) <= EPS:
                    raise OutsidePicture(f"{where}: on the {width}x{height} picture the line has no length")
                out.append(Shape(spec.name, pts, spec.classes, spec.anchor))
    return Resolved(width, height, tuple(zones), tuple(lines))


def anchors(boxes: np.ndarray, anchor: Anchor) -> np.ndarray:
    """N x 2: the bottom centre, centre or top centre of each box (x1 y1 x2 y2)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x = (boxes[:, 0] + boxes[:, 2]) / 2
    if anchor is Anchor.BOTTOM:
        y = boxes[:, 3]
    elif anchor is Anchor.TOP:
        y = boxes[:, 1]
    else:
        y = (boxes[:, 1] + boxes[:, 3]) / 2
    return np.stack([x, y], axis=1)


def inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Bool per point: inside the polygon or on its border (even-odd rule)."""
    points = np.asarray(points, np.float64).reshape(-1, 1, 2)
    polygon = np.asarray(polygon, np.float64)
    return _inside_edges(np.broadcast_to(points, (len(points), len(polygon), 2)), polygon[None],
                         np.roll(polygon, -1, axis=0)[None], np.zeros(1, np.int64))[:, 0]


def _inside_edges(pts: np.ndarray, start: np.ndarray, end: np.ndarray, first: np.ndarray) -> np.ndarray:
    """pts (N, E, 2): for each edge the point to test against its polygon; start/end (1, E, 2): the
    edges, polygons one after another from the indexes `first`. (N, polygons) bools."""
    px, py = pts[..., 0], pts[..., 1]
    x1, y1, x2, y2 = start[..., 0], start[..., 1], end[..., 0], end[..., 1]
    straddles = (y1 > py) != (y2 > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        at_x = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
    hits = np.add.reduceat((straddles & (px < at_x)).astype(np.int64), first, axis=1)
    # On an edge counts as inside (so a point exactly on a shared border is never in neither).
    ex, ey = x2 - x1, y2 - y1
    cross = ex * (py - y1) - ey * (px - x1)
    dot = (px - x1) * ex + (py - y1) * ey
    length2 = ex * ex + ey * ey
    on_edge = (np.abs(cross) <= 1e-7 * np.maximum(1.0, np.sqrt(length2))) & (dot >= -EPS) & (dot <= length2 + EPS)
    return (hits % 2 == 1) | np.logical_or.reduceat(on_edge, first, axis=1)


def side(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Signed distance (pixels) of each point to the line through P1, P2: > 0 on the right-hand
    side of P1 -> P2 as drawn (x right, y down), where (P2 - P1) x (A - P1) > 0."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    p1, p2 = line[0], line[1]
    d = p2 - p1
    cross = d[0] * (points[:, 1] - p1[1]) - d[1] * (points[:, 0] - p1[0])
    return cross / np.hypot(d[0], d[1])


def crosses(a: np.ndarray, b: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Bool per row: the path a[i] -> b[i] meets the segment P1-P2 (closed: touching counts)."""
    a = np.asarray(a, np.float64).reshape(-1, 2)
    b = np.asarray(b, np.float64).reshape(-1, 2)
    return _crosses(a, b, np.asarray(line[0], np.float64), np.asarray(line[1], np.float64))


def _cross(o, u, v):
    """(u - o) x (v - o), broadcast."""
    return (u[..., 0] - o[..., 0]) * (v[..., 1] - o[..., 1]) - (u[..., 1] - o[..., 1]) * (v[..., 0] - o[..., 0])


def _within(p, q, r):
    """r inside the bounding box of p-q (for the collinear cases)."""
    return ((np.minimum(p[..., 0], q[..., 0]) - EPS <= r[..., 0]) & (r[..., 0] <= np.maximum(p[..., 0], q[..., 0]) + EPS)
            & (np.minimum(p[..., 1], q[..., 1]) - EPS <= r[..., 1]) & (r[..., 1] <= np.maximum(p[..., 1], q[..., 1]) + EPS))


def _crosses(a, b, p1, p2) -> np.ndarray:
    """Paths a -> b against segments p1-p2, all broadcast: whether they share a point."""
    d1, d2 = _cross(p1, p2, a), _cross(p1, p2, b)  # a and b against the line
    d3, d4 = _cross(a, b, p1), _cross(a, b, p2)  # the line's ends against the path
    proper = (d1 * d2 < 0) & (d3 * d4 < 0)
    z1, z2, z3, z4 = (np.abs(d) <= EPS for d in (d1, d2, d3, d4))
    if not (z1.any() or z2.any() or z3.any() or z4.any()):
        return proper
    touch = (z1 & _within(p1, p2, a)) | (z2 & _within(p1, p2, b)) | (z3 & _within(a, b, p1)) | (z4 & _within(a, b, p2))
    return proper | touch
