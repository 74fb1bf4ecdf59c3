"""Draw detections: a pure function from (image, detections, names) to a new image.

Images are RGB, so colors here are (R, G, B). Each class keeps one color on every
frame (its COCO id picks it from a fixed palette); the label text is black or white,
whichever reads better on that color. `draw_hud` adds the live status panel and banner.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import cv2
import numpy as np

from .frames import Detections

Color = Tuple[int, int, int]

# 20 distinct colors, (R, G, B). Label 1 (COCO "person") is red.
PALETTE: Tuple[Color, ...] = (
    (255, 179, 0), (230, 25, 25), (60, 180, 75), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (255, 225, 25),
)

FONT = cv2.FONT_HERSHEY_SIMPLEX


def color_for(label: int) -> Color:
    return PALETTE[int(label) % len(PALETTE)]


def _text_color(color: Color) -> Color:
    r, g, b = color
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def draw_detections(
    image: np.ndarray,
    detections: Detections,
    name_of: Callable[[int], str],
    threshold: float = 0.0,
) -> np.ndarray:
    """A copy of `image` (RGB uint8) with a box, class name and score per detection >= threshold.
    Tracked detections (a track id >= 0) are labelled `person #12 0.91`, coloured by their id."""
    out = image.copy()
    shown = detections.above(threshold)
    if not len(shown):
        return out
    h, w = out.shape[:2]
    thickness = max(2, round(min(h, w) / 320))  # 2 px at least: yuv420p halves color resolution
    scale = max(0.35, min(h, w) / 1000)
    ids = shown.track_ids
    # Draw the weakest first so the strongest stay on top.
    for i in np.argsort(shown.scores, kind="stable"):
        x1, y1, x2, y2 = (int(round(float(v))) for v in shown.boxes[i])
        x1, x2 = sorted((max(0, min(w - 1, x1)), max(0, min(w - 1, x2))))
        y1, y2 = sorted((max(0, min(h - 1, y1)), max(0, min(h - 1, y2))))
        label = int(shown.labels[i])
        track = int(ids[i]) if ids is not None and ids[i] >= 0 else None
        color = color_for(label) if track is None else color_for(track)  # tracked: a stable colour per id
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        name = name_of(label) if track is None else f"{name_of(label)} #{track}"
        text = f"{name} {float(shown.scores[i]):.2f}"
        (tw, th), base = cv2.getTextSize(text, FONT, scale, max(1, thickness // 2))
        ty = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else min(h - th - base - 2, y1 + thickness)
        ty = max(0, ty)
        cv2.rectangle(out, (x1, ty), (min(w - 1, x1 + tw + 4), ty + th + base + 2), color, cv2.FILLED)
        cv2.putText(out, text, (x1 + 2, ty + th + 1), FONT, scale, _text_color(color),
                    max(1, thickness // 2), cv2.LINE_AA)
    return out


def draw_hud(image: np.ndarray, lines: Sequence[str], banner: Optional[str] = None) -> np.ndarray:
    """A copy of `image` with status lines top-left on a dark panel, and an optional red
    banner across the middle (e.g. OFFLINE / reconnecting)."""
    out = image.copy()
    h, w = out.shape[:2]
    scale = max(0.4, min(h, w) / 900)
    thick = 1 if scale < 0.8 else 2
    (_, th), base = cv2.getTextSize("Ag", FONT, scale, thick)
    step = th + base + 4
    if lines:
        widest = max(cv2.getTextSize(line, FONT, scale, thick)[0][0] for line in lines)
        if widest + 12 > w:  # a small frame: shrink the text to fit
            scale *= (w - 12) / widest
            (_, th), base = cv2.getTextSize("Ag", FONT, scale, thick)
            step = th + base + 4
        width = max(cv2.getTextSize(line, FONT, scale, thick)[0][0] for line in lines) + 12
        height = step * len(lines) + 6
        panel = out[0:min(h, height), 0:min(w, width)]
        panel[:] = (panel.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken: readable on any picture
        for i, line in enumerate(lines):
            cv2.putText(out, line, (6, 4 + th + i * step), FONT, scale, (255, 255, 255), thick, cv2.LINE_AA)
    if banner:
        big = scale * 1.6
        (bw, bh), bbase = cv2.getTextSize(banner, FONT, big, thick + 1)
        y1 = max(0, h // 2 - bh)
        y2 = min(h, h // 2 + bh + bbase)
        cv2.rectangle(out, (0, y1), (w - 1, y2), (200, 20, 20), cv2.FILLED)
        cv2.putText(out, banner, (max(4, (w - bw) // 2), min(h - 2, h // 2 + bh // 2)), FONT, big,
                    (255, 255, 255), thick + 1, cv2.LINE_AA)
    return out


class BoxAnnotator:
    """Boxes, class names and scores (the `Annotator` every run uses)."""

    def __init__(self, name_of: Callable[[int], str]):
        self.name_of = name_of

    def annotate(self, image: np.ndarray, detections: Detections) -> np.ndarray:
        return draw_detections(image, detections, self.name_of)


MOTION_COLOR: Color = (255, 0, 255)  # magenta: no class colour is as loud
MASK_COLOR: Color = (40, 40, 40)


def draw_motion(image: np.ndarray, motion, masks: Sequence[Sequence[Tuple[float, float]]] = ()) -> np.ndarray:
    """A copy of `image` with the motion detector's view (--draw-motion): masked areas darkened
    and outlined, each moving region boxed in magenta, and `motion N.N %` (the changed share of
    the picture; `rebaselined` after a change of the whole picture) in the bottom-left corner.
    `motion`: a `streamer.motion.Motion`; masks: polygons as fractions of the picture."""
    out = image.copy()
    h, w = out.shape[:2]
    thickness = max(1, round(min(h, w) / 360))
    for polygon in masks:
        pts = np.array([[round(x * w), round(y * h)] for x, y in polygon], np.int32)
        shaded = out.copy()
        cv2.fillPoly(shaded, [pts], MASK_COLOR)
        out = cv2.addWeighted(shaded, 0.5, out, 0.5, 0)
        cv2.polylines(out, [pts], True, (200, 200, 200), thickness, cv2.LINE_AA)
    for x1, y1, x2, y2 in np.asarray(motion.regions).reshape(-1, 4):
        cv2.rectangle(out, (int(x1), int(y1)), (int(x2), int(y2)), MOTION_COLOR, thickness)
    text = "rebaselined" if motion.rebaselined else f"motion {motion.changed * 100:.1f} %"
    scale = max(0.4, min(h, w) / 800)
    cv2.putText(out, text, (6, h - 8), FONT, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(out, text, (6, h - 8), FONT, scale, MOTION_COLOR if motion.moving else (255, 255, 255),
                thickness, cv2.LINE_AA)
    return out
