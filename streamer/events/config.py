"""Zones and counting lines as settings: frozen values read once from a camera file or `--zones`.

    lines:
      door: {points: [[330, 0], [330, 480]], classes: [person]}
    zones:
      driveway: {points: [[0, 300], [640, 300], [640, 480], [0, 480]], min_frames: 3}

A coordinate is a number (pixels of the upright picture, floats allowed) or a percentage string
(`"50%"`: that fraction of the picture's width for x, of its height for y). Everything that can
be checked without the picture is checked here (`check_regions`): at least 3 points for a zone,
2 for a line, names usable as metrics labels, a polygon that does not cross itself, a line of
some length. What only the picture shows (a point outside it) is checked at the first frame
(`events.geometry.resolve`, exit 3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from ..states import Word


class Anchor(Word):
    """The point of a box that zones and lines look at."""

    BOTTOM = "bottom"  # the bottom centre: where a person or a car touches the ground
    CENTER = "center"
    TOP = "top"


@dataclass(frozen=True)
class Coord:
    """One coordinate: pixels, or (fraction=True) a fraction 0..1 of the picture's width / height."""

    value: float
    fraction: bool = False

    def pixels(self, extent: int) -> float:
        return self.value * extent if self.fraction else self.value

    def __str__(self) -> str:
        return f"{self.value * 100:g}%" if self.fraction else f"{self.value:g}"


Point = Tuple[Coord, Coord]

LIVE_MIN_FRAMES = 3  # a zone's default inertia live (frames inside before an object counts as entered)
FILE_MIN_FRAMES = 1  # ... and in files (every frame is there: no flicker from late answers)


@dataclass(frozen=True)
class ZoneSpec:
    """A polygon. classes: only these class names (None: all); min_frames: frames an object must be
    inside (and then outside) before it counts as entered (left) - None: LIVE_MIN_FRAMES live,
    FILE_MIN_FRAMES in files; loiter_s: an update event once an object has stayed this long."""

    name: str
    points: Tuple[Point, ...]
    classes: Optional[Tuple[str, ...]] = None
    min_frames: Optional[int] = None
    loiter_s: Optional[float] = None
    anchor: Anchor = Anchor.BOTTOM


@dataclass(frozen=True)
class LineSpec:
    """A segment P1 -> P2. A crossing onto its right-hand side as drawn (x right, y down) is `in`."""

    name: str
    points: Tuple[Point, Point]
    classes: Optional[Tuple[str, ...]] = None
    anchor: Anchor = Anchor.BOTTOM


@dataclass(frozen=True)
class Regions:
    """A camera's (or a file's) zones and lines. where: how errors name it (`cameras.front`;
    "" in a --zones file); origin: the file they come from (errors start with it)."""

    zones: Tuple[ZoneSpec, ...] = ()
    lines: Tuple[LineSpec, ...] = ()
    where: str = ""
    origin: str = ""

    def __bool__(self) -> bool:
        return bool(self.zones or self.lines)

    def field(self, kind: str, name: str, key: str) -> str:
        """`cameras.yaml: cameras.front.zones.driveway.points` (the name an error gives)."""
        dotted = ".".join(p for p in (self.where, kind, name, key) if p)
        return f"{self.origin}: {dotted}" if self.origin else dotted

    def class_names(self):
        """(field, class names) of every zone and line that names classes."""
        for kind, items in (("zones", self.zones), ("lines", self.lines)):
            for item in items:
                if item.classes is not None:
                    yield self.field(kind, item.name, "classes"), item.classes


class RegionsError(ValueError):
    """A zone or line that cannot be right; the message names its field."""


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PERCENT = re.compile(r"^\s*(-?[0-9]+(?:\.[0-9]*)?|-?\.[0-9]+)\s*%\s*$")


def parse_coord(value: Any, where: str) -> Coord:
    """A number (pixels) or "N%" (a fraction of the picture's width or height)."""
    if isinstance(value, bool):
        raise RegionsError(f"{where}: a coordinate is a number of pixels or a percentage like \"50%\" (got {value!r})")
    if isinstance(value, (int, float)):
        return Coord(float(value))
    if isinstance(value, str):
        match = _PERCENT.match(value)
        if match:
            return Coord(float(match.group(1)) / 100.0, fraction=True)
    raise RegionsError(f"{where}: a coordinate is a number of pixels or a percentage like \"50%\" (got {value!r})")


def _points(raw: Any, where: str) -> Tuple[Point, ...]:
    if not isinstance(raw, (list, tuple)):
        raise RegionsError(f"{where}: give a list of [x, y] points")
    points = []
    for i, point in enumerate(raw):
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            raise RegionsError(f"{where}[{i}]: a point is [x, y] (got {point!r})")
        points.append((parse_coord(point[0], f"{where}[{i}]"), parse_coord(point[1], f"{where}[{i}]")))
    return tuple(points)


def _unit_points(points: Tuple[Point, ...]) -> Optional[list]:
    """The points as plain numbers when all share one unit (pixels, or fractions), else None:
    crossing and length can be checked without the picture then (scaling the axes keeps both)."""
    if len({c.fraction for p in points for c in p}) != 1:
        return None
    return [(p[0].value, p[1].value) for p in points]


def zone_spec(name: str, raw: Mapping[str, Any], where: str) -> ZoneSpec:
    """A zone from its validated mapping (points, classes, min_frames, loiter_s, anchor)."""
    points = _points(raw.get("points"), f"{where}.points")
    if len(points) < 3:
        raise RegionsError(f"{where}.points: a zone needs at least 3 points (got {len(points)})")
    plain = _unit_points(points)
    if plain is not None:
        from .geometry import polygon_problem

        problem = polygon_problem(plain)
        if problem:
            raise RegionsError(f"{where}.points: {problem}")
    return ZoneSpec(name=name, points=points, classes=_classes(raw.get("classes")),
                    min_frames=raw.get("min_frames"), loiter_s=raw.get("loiter_s"),
                    anchor=Anchor(raw.get("anchor") or "bottom"))


def line_spec(name: str, raw: Mapping[str, Any], where: str) -> LineSpec:
    points = _points(raw.get("points"), f"{where}.points")
    if len(points) != 2:
        raise RegionsError(f"{where}.points: a line is two points [[x1, y1], [x2, y2]] (got {len(points)})")
    plain = _unit_points(points)
    if plain is not None and plain[0] == plain[1]:
        raise RegionsError(f"{where}.points: the line's two points are the same: it has no length")
    return LineSpec(name=name, points=(points[0], points[1]), classes=_classes(raw.get("classes")),
                    anchor=Anchor(raw.get("anchor") or "bottom"))


def _classes(raw) -> Optional[Tuple[str, ...]]:
    if raw is None:
        return None
    return tuple(str(c).strip() for c in raw if str(c).strip())


def regions(zones: Optional[Mapping[str, Mapping]], lines: Optional[Mapping[str, Mapping]], where: str,
            origin: str = "") -> Regions:
    """Regions from a camera's `zones:` and `lines:` (mappings name -> settings, already checked by
    the camera file's schema for keys and types). Raises RegionsError naming the field."""
    found_zones, found_lines = [], []
    for kind, items, make, out in (("zones", zones, zone_spec, found_zones), ("lines", lines, line_spec, found_lines)):
        for name, raw in (items or {}).items():
            field_where = ".".join(p for p in (where, kind, str(name)) if p)
            if not _NAME.match(str(name)):
                raise RegionsError(f"{field_where}: the name must be 1-64 letters, digits, '_', '.' or '-' "
                                   "(it becomes a metrics label)")
            out.append(make(str(name), raw, field_where))
    return Regions(zones=tuple(found_zones), lines=tuple(found_lines), where=where, origin=origin)


def schema_models():
    """The pydantic models of a zone and a line (the camera file's and --zones' schema)."""
    from typing import List, Literal

    from pydantic import BaseModel, ConfigDict, Field

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=False)

    class Zone(Strict):
        points: Any  # [[x, y], ...]: checked by zone_spec / line_spec (a number, or "50%"; never `yes`)
        classes: Optional[List[str]] = None
        min_frames: Optional[int] = Field(default=None, ge=1)
        loiter_s: Optional[float] = Field(default=None, gt=0)
        anchor: Optional[Literal["bottom", "center", "top"]] = None

    class Line(Strict):
        points: Any  # [[x, y], ...]: checked by zone_spec / line_spec (a number, or "50%"; never `yes`)
        classes: Optional[List[str]] = None
        anchor: Optional[Literal["bottom", "center", "top"]] = None

    class ZonesFile(Strict):
        zones: Optional[Dict[str, Zone]] = None
        lines: Optional[Dict[str, Line]] = None

    return Zone, Line, ZonesFile


def dump(model_map) -> Optional[Dict[str, dict]]:
    """pydantic models by name -> plain dicts (None stays None)."""
    if model_map is None:
        return None
    return {name: m.model_dump() for name, m in model_map.items()}
