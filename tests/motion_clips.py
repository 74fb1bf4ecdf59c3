"""Camera-like footage for the motion detector, written as H.264 with PyAV and read back.

A `Footage` is a static scene as a fixed camera sees it: a grey textured background (no hue:
the sprite detector of tests/sprites.py never sees it), per-frame sensor noise, and on top of it
what the test needs: solid-coloured things on known paths (the sprite detector's colours, so a
served sprite model finds them), an exposure change (`gain`: the whole picture scaled, clipped
at 255 as a sensor does), a region whose texture sways (a tree in the wind), the frame's index
code (tests.helpers: black/white cells across the top-left corner, which change every frame).
Written with libx264 at a coarse quality with a keyframe every second, so a static scene
flickers as real camera streams do (`write`); read back through the file source the runs use
(`decoded`). No torch here: the unit tests use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from streamer.frames import Frame

from .helpers import CELL, CODE_BITS, write_clip

Box = Tuple[float, float, float, float]
# The sprite detector's colours (tests/sprites.py COLOURS): red and magenta are persons, green a car.
RED, GREEN, BLUE = (225, 35, 35), (35, 200, 45), (35, 70, 230)
LABELS = {RED: 1, GREEN: 3, BLUE: 18}
CAMERA_OPTIONS = {"crf": "28", "g": "25"}  # coarse, a keyframe a second: the flicker of a real stream


@dataclass
class Thing:
    """A solid-coloured object with a brightness pattern (texture for flow) on a path: frame
    index -> its box (pixels), None where it is not in the picture."""

    colour: Tuple[int, int, int]
    path: Callable[[int], Optional[Box]]
    key: str = "a"


@dataclass
class Footage:
    name: str
    frames: int
    width: int = 320
    height: int = 240
    rate: int = 25
    noise: float = 3.0  # sensor noise, grey levels (standard deviation, every pixel, every frame)
    things: Sequence[Thing] = ()
    gain: Callable[[int], float] = lambda i: 1.0  # exposure: the picture scaled by this (clipped)
    sway: Optional[Tuple[Box, float]] = None  # a region (pixels) whose texture sways +-amplitude px
    code: bool = False  # the index code in the top-left corner
    seed: int = 0

    def truth(self, index: int) -> Dict[str, Tuple[int, np.ndarray]]:
        """The things in view on a frame: key -> (COCO label, box clipped to the picture)."""
        out = {}
        for thing in self.things:
            box = self._clipped(thing.path(index))
            if box is not None:
                out[thing.key] = (LABELS.get(thing.colour, 0), box)
        return out

    def _clipped(self, box: Optional[Box]) -> Optional[np.ndarray]:
        if box is None:
            return None
        x1, y1, x2, y2 = max(0.0, box[0]), max(0.0, box[1]), min(self.width, box[2]), min(self.height, box[3])
        return np.array([x1, y1, x2, y2]) if x2 - x1 >= 4 and y2 - y1 >= 4 else None


def texture(width: int, height: int, seed: int, cell: int = 8) -> np.ndarray:
    """A smooth grey texture with fine grain (float32, 0-255)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (height // cell + 2, width // cell + 2)).astype(np.float32)
    smooth = cv2.resize(coarse, (width + 2 * cell, height + 2 * cell), interpolation=cv2.INTER_CUBIC)
    smooth = smooth[cell:cell + height, cell:cell + width]
    return np.clip(smooth * 0.7 + 35 + rng.uniform(-12, 12, (height, width)), 0, 255).astype(np.float32)


def _pattern(colour: Tuple[int, int, int], w: int, h: int) -> np.ndarray:
    rng = np.random.default_rng(sum(colour))
    coarse = rng.uniform(0.65, 1.0, (8, 8)).astype(np.float32)
    return cv2.resize(coarse, (max(1, w), max(1, h)), interpolation=cv2.INTER_LINEAR)


def render(footage: Footage) -> List[np.ndarray]:
    """The footage's RGB frames (uint8)."""
    w, h = footage.width, footage.height
    base = texture(w, h, footage.seed)
    wide = texture(w + 64, h, footage.seed + 1)  # what sways: a wider texture seen through the region
    rng = np.random.default_rng(footage.seed + 99)
    frames = []
    for i in range(footage.frames):
        grey = base.copy()
        if footage.sway is not None:
            (x1, y1, x2, y2), amplitude = footage.sway
            x1, y1, x2, y2 = int(x1), int(y1), int(x2), int(y2)
            shift = 32 + amplitude * np.sin(2 * np.pi * i / 20.0)  # swinging once every 0.8 s
            m = np.float32([[1, 0, -shift], [0, 1, 0]])
            moved = cv2.warpAffine(wide, m, (w + 64, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            grey[y1:y2, x1:x2] = moved[y1:y2, x1:x2] * 1.3 - 20  # a tree: more contrast than the rest
        img = np.repeat(grey[..., None], 3, axis=2)
        for thing in footage.things:
            box = thing.path(i)
            if box is None:
                continue
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            cx1, cy1, cx2, cy2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
            if cx2 <= cx1 or cy2 <= cy1:
                continue
            shade = _pattern(thing.colour, x2 - x1, y2 - y1)[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
            img[cy1:cy2, cx1:cx2] = shade[..., None] * np.array(thing.colour, np.float32)
        img = img * footage.gain(i) + rng.normal(0, footage.noise, (h, w, 1)).astype(np.float32)
        out = np.clip(img, 0, 255).astype(np.uint8)
        if footage.code:
            for bit in range(CODE_BITS):
                out[0:CELL, bit * CELL:(bit + 1) * CELL] = 255 if (i >> bit) & 1 else 0
        frames.append(out)
    return frames


def write(path: Path, footage: Footage, options: Optional[dict] = None) -> Path:
    """The footage as an H.264 mp4 (camera-like quality unless `options` say otherwise)."""
    frames = render(footage)
    return write_clip(Path(path), len(frames), footage.width, footage.height, rate=Fraction(footage.rate),
                      image_fn=lambda i, _w, _h: frames[i], options=CAMERA_OPTIONS if options is None else options)


def decoded(path: Path) -> List[Frame]:
    """The clip's frames as a file run reads them (streamer.sources.FileSource)."""
    from streamer.sources import FileSource

    with FileSource(Path(path), audio=False) as src:
        return list(src.frames())


def code_mask(width: int, height: int) -> str:
    """The motion mask polygon ('x,y x,y ...', fractions) over the index code of a clip this size."""
    x, y = min(1.0, (CODE_BITS * CELL + 4) / width), min(1.0, (CELL + 4) / height)
    return f"0,0 {x:.3f},0 {x:.3f},{y:.3f} 0,{y:.3f}"


def box(cx: float, cy: float, w: float, h: float) -> Box:
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def crossing(start: int, frames: int, speed: float, y: float, size: Tuple[float, float], width: int,
             ) -> Callable[[int], Optional[Box]]:
    """A path across the picture from the left edge, starting at frame `start`."""
    def path(i: int) -> Optional[Box]:
        if i < start or i >= start + frames:
            return None
        return box(-size[0] / 2 + speed * (i - start), y, *size)
    return path


def moving_frames(footage: Footage) -> List[int]:
    """Frames where a thing in view is not where it was on the frame before (it moves or enters),
    as the truth sees it (the visible part of each thing, at least 4 px wide). The frame after a
    thing's last sliver left is not one: nothing is in view there to move."""
    out = []
    for i in range(1, footage.frames):
        before, now = footage.truth(i - 1), footage.truth(i)
        if any(k not in before or not np.array_equal(before[k][1], now[k][1]) for k in now):
            out.append(i)
    return out


def static(frames: int = 100) -> Footage:
    """Nothing moves: sensor noise and compression flicker only."""
    return Footage("static", frames, noise=4.0)


def exposure(frames: int = 100, at: int = 50) -> Footage:
    """Nothing moves; the exposure steps up by a third at `at` (auto-exposure, lights)."""
    return Footage("exposure", frames, noise=4.0, gain=lambda i: 1.0 if i < at else 1.33)


def exposure_ramp(frames: int = 100, start: int = 40, length: int = 25) -> Footage:
    """Nothing moves; auto-exposure brightens the picture by 40 % over `length` frames."""
    return Footage("exposure_ramp", frames, noise=4.0,
                   gain=lambda i: 1.0 + 0.4 * min(max(i - start, 0), length) / length)


def swaying(frames: int = 100) -> Footage:
    """Nothing moves but a tree swaying in the right third of the picture (mask it)."""
    return Footage("swaying", frames, noise=4.0, sway=((210, 40, 310, 200), 6.0))


SWAY_MASK = "0.64,0.12 0.99,0.12 0.99,0.87 0.64,0.87"  # covers swaying()'s region (320x240)


def crossing_object(frames: int = 100, start: int = 30) -> Footage:
    """A person of about 1.5 % of the picture walks across it, from frame `start` on."""
    return Footage("crossing", frames, noise=4.0,
                   things=[Thing(RED, crossing(start, 60, 6.0, 150, (26, 44), 320))])


SCENES = {f.__name__: f for f in (static, exposure, exposure_ramp, swaying, crossing_object)}
