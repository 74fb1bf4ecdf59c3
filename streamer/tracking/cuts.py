"""Scene cuts: a cheap test of whether a frame starts a new shot.

Each frame is reduced to a small grey thumbnail (`THUMB` pixels; any input size costs about the
same: the image is first sampled down to 4 x THUMB). Its similarity to the previous frame's
thumbnail is the best normalised cross-correlation over small shifts (up to `SHIFT` thumbnail
pixels, about 3 % of the width: a pan), so it ignores a pan, a change of brightness or contrast
(a flash, a fade), and drops to about 0 between two unrelated pictures.

A frame is a cut when its similarity is below `similarity` and its dissimilarity (1 - similarity)
is also `jump` times the median dissimilarity of the recent frames of the shot (a busy shot whose
frames never correlate well does not cut itself). A flat thumbnail (black, a fade's end) has no
correlation: two flat ones are similar when their brightness is; a flat one against a picture
is a cut, and so is a frame whose size differs from the previous one's. The first frame of a
stream is not a cut (there is nothing to end).

Measured on the bundled sample (pans and zooms over photos, hard cuts every 12 frames): within
its shots the similarity stays >= 0.92, at its cuts it is <= 0.08.

What is exact: the figures. What is estimated: whether a change is a cut. A very fast pan over
fine texture (beyond the shift searched) can count as a cut; the cost is small (tracks end and
start again).

`CutDetector` is deterministic: two detectors fed the same frames give the same answers, so the
inference schedule (before inference) and the tracker stage (after) agree without sharing state.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

import cv2
import numpy as np

from ..frames import Frame
from ..grey import FLOW_WIDTH, Grey, grey_of

THUMB = (64, 48)  # width, height of the thumbnail compared
SHIFT = 2  # thumbnail pixels searched each way for a pan
FLAT_STD = 2.0  # a thumbnail with less contrast than this (grey levels) is flat
FLAT_SAME = 10.0  # two flat thumbnails this close in mean brightness are the same shot


def thumbnail(image: np.ndarray) -> np.ndarray:
    """An RGB frame -> a THUMB-sized grey thumbnail (float32): sampled down to 4 x THUMB
    (nearest pixels: the cost does not grow with the input), then averaged down to THUMB."""
    w, h = THUMB
    if image.shape[1] > 4 * w and image.shape[0] > 4 * h:
        image = cv2.resize(image, (4 * w, 4 * h), interpolation=cv2.INTER_NEAREST)
    small = cv2.resize(image, THUMB, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)


def grey_thumbnail(grey: Grey) -> np.ndarray:
    """A THUMB-sized thumbnail (float32) of a frame's shared grey copy (`streamer.grey`)."""
    return cv2.resize(grey.image, THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)


def similarity(a: np.ndarray, b: np.ndarray, shift: int = SHIFT) -> float:
    """The best normalised cross-correlation of `a`'s centre (less `shift` pixels on each side)
    with `b` at shifts up to `shift` each way (1: identical up to brightness and contrast; about
    0: unrelated). One cv2.matchTemplate call."""
    flat_a, flat_b = a.std() < FLAT_STD, b.std() < FLAT_STD
    if flat_a or flat_b:
        return 1.0 if flat_a and flat_b and abs(float(a.mean()) - float(b.mean())) < FLAT_SAME else 0.0
    centre = a[shift:a.shape[0] - shift, shift:a.shape[1] - shift]
    if centre.std() < FLAT_STD:
        return 0.0
    scores = cv2.matchTemplate(b, centre, cv2.TM_CCOEFF_NORMED)
    return float(np.nanmax(scores))


class CutDetector:
    """similarity: a cut's similarity is below this; jump: and its dissimilarity is this many
    times the recent median; history: how many recent frames that median uses."""

    def __init__(self, similarity: float = 0.5, jump: float = 3.0, history: int = 15):
        self.threshold = similarity
        self.jump = jump
        self.recent: deque = deque(maxlen=history)
        self.previous: Optional[np.ndarray] = None
        self.size: Optional[tuple] = None  # the previous frame's height and width
        self.last = 1.0  # the latest frame's similarity, for tests and tuning

    def reset(self) -> None:
        """Forget the previous frame (a new stream starts: its first frame is not a cut)."""
        self.previous = None
        self.size = None
        self.recent.clear()

    def update(self, image: np.ndarray) -> bool:
        """True when `image` (RGB) starts a new shot; call once per frame, in order."""
        return self._update(thumbnail(image), image.shape[:2])

    def update_frame(self, frame: Frame, width: int = FLOW_WIDTH) -> bool:
        """`update` from the frame's shared grey copy (`streamer.grey.grey_of`): the full-size
        picture is not read again. Detectors fed the same frames this way agree."""
        return self._update(grey_thumbnail(grey_of(frame, width)), frame.image.shape[:2])

    def _update(self, thumb: np.ndarray, size: tuple) -> bool:
        previous, self.previous = self.previous, thumb
        size, self.size = self.size, size
        if previous is None:
            return False
        if size != self.size:  # the stream changed size (a camera's new mode): a new shot
            self.recent.clear()
            self.last = 0.0
            return True
        self.last = similarity(thumb, previous)
        change = 1.0 - self.last
        usual = float(np.median(self.recent)) if self.recent else 0.0
        cut = self.last < self.threshold and change >= self.jump * usual
        if cut:
            self.recent.clear()
        else:
            self.recent.append(change)
        return cut
