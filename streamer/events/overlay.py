"""Zones and lines drawn on a copy of the picture, with their counts (an `Annotator`).

Drawn on the window and the web page always (when a camera has zones or lines), and into
`--out` / recordings only with `--draw-zones` (the annotated video shows what the model said).
A line is drawn P1 -> P2 with a small arrow from its middle towards its `in` side and its counts
(`door in 3 out 1`); a zone is outlined with its name and the objects inside now / entered
(`driveway 1 now, 4 entered`).
"""

from __future__ import annotations

from typing import Callable, Dict

import cv2
import numpy as np

from ..frames import Detections
from ..render import FONT
from .geometry import Resolved
from .types import Counts

ZONE_COLOUR = (255, 200, 0)  # RGB
LINE_COLOUR = (0, 220, 255)


def _total(per: Dict[str, int]) -> int:
    return sum(int(n) for n in per.values())


def _label(image: np.ndarray, text: str, x: float, y: float, colour, scale: float, thick: int) -> None:
    h, w = image.shape[:2]
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
    x = int(min(max(0, x), max(0, w - tw - 4)))
    y = int(min(max(th + base + 2, y), h - 1))
    cv2.rectangle(image, (x, y - th - base - 2), (x + tw + 4, y), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, (x + 2, y - base - 1), FONT, scale, colour, thick, cv2.LINE_AA)


def draw_regions(image: np.ndarray, geometry: Resolved, counts: Counts) -> np.ndarray:
    """A copy of `image` with every zone and line and their counts."""
    out = image.copy()
    h, w = out.shape[:2]
    thick = max(2, round(min(h, w) / 320))
    scale = max(0.35, min(h, w) / 1000)
    text_thick = max(1, thick // 2)
    for zone in geometry.zones:
        pts = np.round(zone.points).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [pts], True, ZONE_COLOUR, thick, cv2.LINE_AA)
        counted = counts.zones.get(zone.name, {})
        text = f"{zone.name} {_total(counted.get('inside', {}))} now, {_total(counted.get('entered', {}))} entered"
        x, y = zone.points[:, 0].min(), zone.points[:, 1].min()
        _label(out, text, x + thick, y + 2 * thick + 14 * scale * 2, ZONE_COLOUR, scale, text_thick)
    for line in geometry.lines:
        p1, p2 = line.points
        a, b = tuple(int(round(v)) for v in p1), tuple(int(round(v)) for v in p2)
        cv2.line(out, a, b, LINE_COLOUR, thick, cv2.LINE_AA)
        mid = (p1 + p2) / 2
        d = p2 - p1
        normal = np.array([-d[1], d[0]]) / max(1e-9, float(np.hypot(*d)))  # the right-hand side as drawn (y down)
        tip = mid + normal * max(12.0, 0.04 * min(h, w))
        cv2.arrowedLine(out, tuple(int(round(v)) for v in mid), tuple(int(round(v)) for v in tip), LINE_COLOUR,
                        thick, cv2.LINE_AA, tipLength=0.4)
        counted = counts.lines.get(line.name, {})
        text = f"{line.name} in {_total(counted.get('in', {}))} out {_total(counted.get('out', {}))}"
        _label(out, text, mid[0] + 4, mid[1] - 4, LINE_COLOUR, scale, text_thick)
    return out


class RegionsAnnotator:
    """The Annotator: the stage's zones and lines for the picture's size, with its counts now.
    `geometry(width, height)` and `counts()` are the event stage's."""

    def __init__(self, geometry: Callable[[int, int], Resolved], counts: Callable[[], Counts]):
        self.geometry = geometry
        self.counts = counts

    def annotate(self, image: np.ndarray, detections: Detections) -> np.ndarray:
        h, w = image.shape[:2]
        return draw_regions(image, self.geometry(w, h), self.counts())
