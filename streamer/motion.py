"""Motion: whether anything moves in a camera's picture, cheaply (issue 26).

`MotionDetector.detect(frame, time)` looks at a small grey copy of the frame (`streamer.grey`:
the copy the tracker's optical flow makes anyway when there is a tracker, shrunk further; else
one of its own, `width` pixels wide; the cost does not grow with the camera's resolution),
blurred, and compares it with a running background:

1. **Brightness is compensated first**: the picture is fitted to the background as
   `a * background + b`, clipped to 0-255 as the sensor clips (least squares over the pixels
   that did not change, so a moving object does not bend the fit). Auto-exposure, a cloud, lights dimming: the whole picture scales and
   shifts, nothing moves.
2. A pixel **changed** when it differs from the fitted background by more than `threshold`
   grey levels; masked pixels (`mask`: polygons of the picture to ignore, as fractions of its
   width and height: a timestamp overlay, a tree) never change.
3. When more than `rebaseline` of the picture changed even so, or changes are spread all over
   it (in at least `SPREAD` of a coarse grid's cells, over `SPREAD_MIN` of the picture: an IR
   filter switching at dusk, the camera turned), it is a **change of background**, not motion
   everywhere: the background becomes this picture and no motion is reported
   (`Motion.rebaselined`; the inference policy infers that one frame).
4. Otherwise changed pixels are grouped into regions (a small dilation joins the parts of one
   object); a region covering at least `min_area` of the picture is **motion**.
5. The background follows the picture with a time constant of `background_s` seconds (a car
   that parked becomes background within a second or two; so does the place a car left).

Blurring and averaging down to `width` pixels erase sensor noise and compression flicker (H.264
re-encoding a static scene); what remains of them stays far below `threshold`.

Exact: the figures (changed fraction, regions). Estimated: whether a change is motion; a slow,
low-contrast object can pass unseen, a flickering light can count as motion (mask it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from .frames import Frame
from .grey import Grey, grey_of, shrink

Point = Tuple[float, float]
Polygon = Tuple[Point, ...]

WIDTH = 160  # the detector's working width (pixels): 160x90 for 16:9, whatever the camera sends
THRESHOLD = 25.0  # grey levels a pixel must differ from the fitted background by
MIN_AREA = 0.001  # the smallest region that counts as motion, as a fraction of the picture
REBASELINE = 0.5  # more of the picture changed than this: a new background, not motion
SPREAD, SPREAD_MIN = 0.8, 0.15  # ... or changes in this share of the grid's cells, over this much of the picture
GRID = (8, 6)  # the coarse grid (cells across, down) that tells spread changes from an object
BACKGROUND_S = 1.0  # the running background's time constant, seconds
DEFAULT_STEP_S = 0.04  # seconds between two frames without timestamps (25 fps)


@dataclass(frozen=True)
class Motion:
    """What the detector saw in one frame.

    moving: a region of at least min_area changed; regions: those regions' boxes (N x 4,
    x1 y1 x2 y2 in frame pixels, float32); changed: the fraction of the unmasked picture that
    changed; rebaselined: the whole picture changed (a new background, no motion)."""

    moving: bool
    regions: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32), repr=False)
    changed: float = 0.0
    rebaselined: bool = False


STILL = Motion(False)


def parse_polygon(text: str, where: str = "mask") -> Polygon:
    """'x,y x,y x,y ...' (fractions of the picture's width and height, at least 3 points) ->
    a polygon. Raises ValueError naming `where`."""
    points = []
    for pair in text.replace(";", " ").split():
        try:
            x, y = (float(v) for v in pair.split(","))
        except ValueError:
            raise ValueError(f"{where}: {pair!r} is not a point 'x,y' (fractions of the picture, "
                             "e.g. '0,0 0.3,0 0.3,0.1 0,0.1')") from None
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"{where}: point {pair!r} is outside the picture (x and y are fractions "
                             "of its width and height, 0 to 1)")
        points.append((x, y))
    if len(points) < 3:
        raise ValueError(f"{where}: a polygon needs at least 3 points 'x,y x,y x,y' (got {len(points)})")
    return tuple(points)


def rasterise(polygons: Sequence[Polygon], width: int, height: int) -> np.ndarray:
    """A bool mask (height x width), True inside any polygon (fractions of the picture)."""
    mask = np.zeros((height, width), np.uint8)
    for polygon in polygons:
        pts = np.array([[x * width, y * height] for x, y in polygon], np.float32)
        cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def fit_brightness(background: np.ndarray, picture: np.ndarray) -> Tuple[float, float]:
    """(a, b) of the least-squares fit picture ~ a * background + b (a within 0.25..4; a flat
    background only shifts: a = 1)."""
    mb, mp = float(background.mean()), float(picture.mean())
    var = float(((background - mb) ** 2).mean())
    if var < 4.0:  # about flat: no contrast to scale
        return 1.0, mp - mb
    a = float(((background - mb) * (picture - mp)).mean()) / var
    a = min(4.0, max(0.25, a))
    return a, mp - a * mb


class MotionDetector:
    """One camera's motion detector (see the module docstring).

    threshold: grey levels (0-255) a pixel must differ by; min_area: the smallest moving region
    (fraction of the picture); mask: polygons (fractions) to ignore; background_s: the running
    background's time constant; rebaseline: the changed fraction that means a new background;
    width: the working width; source_width: start from the frame's shared grey copy of this width
    (`streamer.grey.FLOW_WIDTH` when a tracker makes one anyway; None: a copy of its own)."""

    def __init__(self, threshold: float = THRESHOLD, min_area: float = MIN_AREA, mask: Sequence[Polygon] = (),
                 background_s: float = BACKGROUND_S, rebaseline: float = REBASELINE, width: int = WIDTH,
                 source_width: Optional[int] = None):
        if not 0 < threshold < 255:
            raise ValueError(f"motion threshold must be between 0 and 255 grey levels, got {threshold}")
        if not 0 <= min_area < 1:
            raise ValueError(f"motion min_area must be a fraction of the picture (0 to 1), got {min_area}")
        self.threshold = float(threshold)
        self.min_area = float(min_area)
        self.mask = tuple(tuple(p) for p in mask)
        self.background_s = background_s
        self.rebaseline_fraction = rebaseline
        self.width = width
        self.source_width = source_width
        self.background: Optional[np.ndarray] = None  # float32, working size
        self._ignored: Optional[np.ndarray] = None  # bool, working size: masked pixels
        self._time: Optional[float] = None
        self.rebaselines = 0  # global changes seen (for tests and tuning)

    def reset(self) -> None:
        """Forget the background (a new stream, a scene cut): the next frame becomes it."""
        self.background = None
        self._time = None

    def small(self, frame: Frame) -> Grey:
        """The frame's working copy: grey, `width` wide (from the shared copy when asked to)."""
        if self.source_width is not None and self.source_width > self.width:
            return shrink(grey_of(frame, self.source_width), self.width)
        return grey_of(frame, self.width)

    def detect(self, frame: Frame, time: float) -> Motion:
        """Motion in `frame` (captured or shown at `time`, seconds); call once per frame, in order."""
        grey = self.small(frame)
        picture = cv2.GaussianBlur(grey.image, (5, 5), 0).astype(np.float32)
        step = DEFAULT_STEP_S if self._time is None or time <= self._time else min(time - self._time, 1.0)
        self._time = time
        if self.background is None or self.background.shape != picture.shape:
            self.background = picture
            h, w = picture.shape
            self._ignored = rasterise(self.mask, w, h)
            return STILL
        valid = ~self._ignored
        if not valid.any():
            return STILL
        changed, fraction = self._changed(picture, valid)
        if fraction > self.rebaseline_fraction or (fraction > SPREAD_MIN and self._spread(changed, valid) >= SPREAD):
            self.background = picture
            self.rebaselines += 1
            return Motion(False, changed=fraction, rebaselined=True)
        cv2.accumulateWeighted(picture, self.background, 1.0 - math.exp(-step / self.background_s))
        regions = self._regions(changed, valid, grey.scale)
        return Motion(len(regions) > 0, regions, fraction)

    def _changed(self, picture: np.ndarray, valid: np.ndarray) -> Tuple[np.ndarray, float]:
        """The changed pixels (bool) and their fraction of the unmasked picture; the brightness
        fit is made again without the pixels that changed at first (a moving object)."""
        unclipped = valid & (picture > 2) & (picture < 253)  # a clipped pixel says nothing of the gain
        if unclipped.sum() < 0.25 * valid.sum():
            unclipped = valid
        bg, pic = self.background[unclipped], picture[unclipped]
        a, b = fit_brightness(bg, pic)
        steady = np.abs(pic - np.clip(a * bg + b, 0, 255)) <= self.threshold
        if 0.5 * len(pic) <= steady.sum() < len(pic):
            a, b = fit_brightness(bg[steady], pic[steady])
        expected = np.clip(a * self.background + b, 0, 255)  # a sensor clips too
        changed = (np.abs(picture - expected) > self.threshold) & valid
        return changed, float(changed.sum()) / float(valid.sum())

    @staticmethod
    def _spread(changed: np.ndarray, valid: np.ndarray) -> float:
        """The share of the coarse grid's (unmasked) cells with changes in 5 % of them or more."""
        cells = cv2.resize(changed.astype(np.float32), GRID, interpolation=cv2.INTER_AREA)
        open_cells = cv2.resize(valid.astype(np.float32), GRID, interpolation=cv2.INTER_AREA) > 0.5
        if not open_cells.any():
            return 0.0
        return float((cells[open_cells] > 0.05).mean())

    def _regions(self, changed: np.ndarray, valid: np.ndarray, scale: float) -> np.ndarray:
        """Boxes (frame pixels) of the changed regions of at least min_area (their own changed
        pixels counted; a 3x3 dilation joins the parts of one object)."""
        if not changed.any():
            return np.zeros((0, 4), np.float32)
        joined = cv2.dilate(changed.astype(np.uint8), np.ones((3, 3), np.uint8))
        count, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
        own = np.bincount(labels[changed], minlength=count)
        smallest = max(1.0, self.min_area * changed.size)
        keep = [i for i in range(1, count) if own[i] >= smallest]
        if not keep:
            return np.zeros((0, 4), np.float32)
        x, y, w, h = (stats[keep, k].astype(np.float32) for k in
                      (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT))
        return np.stack([x, y, x + w, y + h], axis=1) / np.float32(scale)
