"""The small grey copy of a frame that every cheap look at the picture shares.

Optical flow (the tracker), the scene-cut test and the motion detector all work on a grey copy
far smaller than the frame. `grey_of(frame, width)` makes it once per frame and width and keeps it
on the frame (`Frame.derived`), so the full-size picture is read once whoever asks first: the
motion detector (before inference) and the tracker (after it) get the same copy.

`prepare(image, max_width)`: an RGB image -> its grey copy at most `max_width` wide (sampled down
to twice that size by nearest pixels first when it is more than twice as wide, then averaged):
the cost stays about flat up to 4K.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .frames import Frame

FLOW_WIDTH = 640  # the width flow and the cut test work at (a tracker's grey copy)


@dataclass(frozen=True)
class Grey:
    """A frame's grey copy: uint8, scaled by `scale` (copy pixels per frame pixel)."""

    image: np.ndarray
    scale: float

    @property
    def nbytes(self) -> int:
        return self.image.nbytes


def prepare(image: np.ndarray, max_width: int = FLOW_WIDTH) -> Grey:
    """An RGB frame -> its grey copy at most `max_width` wide (see the module docstring)."""
    h, w = image.shape[:2]
    scale = min(1.0, max_width / float(w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        if scale < 0.5:  # sample down to twice the size first: the cost stays flat up to 4K
            image = cv2.resize(image, (2 * size[0], 2 * size[1]), interpolation=cv2.INTER_NEAREST)
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        scale = size[0] / float(w)
    return Grey(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), scale)


def grey_of(frame: Frame, max_width: int = FLOW_WIDTH) -> Grey:
    """The frame's grey copy at most `max_width` wide, made once and kept on the frame."""
    key = ("grey", max_width)
    found = frame.derived.get(key)
    if found is None:
        found = frame.derived[key] = prepare(frame.image, max_width)
    return found


def shrink(grey: Grey, max_width: int) -> Grey:
    """A grey copy made smaller (averaged): another, smaller copy of the same frame."""
    h, w = grey.image.shape[:2]
    if w <= max_width:
        return grey
    size = (max_width, max(1, round(h * max_width / float(w))))
    return Grey(cv2.resize(grey.image, size, interpolation=cv2.INTER_AREA), grey.scale * size[0] / float(w))
