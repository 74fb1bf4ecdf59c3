"""Carry boxes from one frame to the next with sparse optical flow (pyramidal Lucas-Kanade).

Per frame pair, for all boxes at once: a small grid of points inside each box (its inner part,
to keep off the background), one forward `cv2.calcOpticalFlowPyrLK` call and one backward call
for every point together, then per box: the points that came back to within `fb_max_px` of
where they started (forward-backward check), their median displacement (the box's move) and the
median ratio of their pairwise distances (its scale). A box with too few such points, or whose
points disagree, is reported as failed (the stage then uses the Kalman prediction).

Flow runs on a grey copy scaled down to at most `max_width` pixels wide (`streamer.grey`: the
copy the cut test and the motion detector share): cheaper, and the same cost for every input
size; boxes are given and returned in frame pixels.

Everything here is an estimate: it follows texture, so it drifts on flat or repetitive
surfaces, and a box whose grid sees mostly background follows the background.
"""

from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

from ..grey import Grey, prepare

__all__ = ["Flow", "Grey", "prepare"]


class Flow:
    """grid: points per side of each box's grid (grid x grid points); inner: the part of the box
    (centred, as a fraction of width and height) the grid covers; window, levels: the LK window
    (pixels) and pyramid levels; fb_max_px: forward-backward error allowed (flow pixels);
    min_points: surviving points a box needs; max_spread: how far (as a fraction of the box size)
    the surviving points' moves may differ from their median (median absolute deviation) before
    the box counts as failed; max_scale_step: the largest scale change per call."""

    def __init__(self, grid: int = 3, inner: float = 0.8, window: int = 11, levels: int = 3,
                 fb_max_px: float = 1.0, min_points: int = 4, max_spread: float = 0.1,
                 max_scale_step: float = 1.25):
        self.grid = grid
        self.inner = inner
        self.lk = dict(winSize=(window, window), maxLevel=levels,
                       criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))
        self.fb_max_px = fb_max_px
        self.min_points = min_points
        self.max_spread = max_spread
        self.max_scale_step = max_scale_step
        steps = (np.arange(grid) + 0.5) / grid  # cell centres in 0..1
        gx, gy = np.meshgrid(steps, steps)
        self._unit = np.stack([gx.ravel(), gy.ravel()], axis=1)  # (grid*grid, 2)

    def points(self, boxes: np.ndarray) -> np.ndarray:
        """The grid points of each box (K x P x 2, flow-independent frame pixels)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        w = (boxes[:, 2] - boxes[:, 0])[:, None]
        h = (boxes[:, 3] - boxes[:, 1])[:, None]
        pad = (1 - self.inner) / 2
        x = boxes[:, 0:1] + w * (pad + self.inner * self._unit[None, :, 0])
        y = boxes[:, 1:2] + h * (pad + self.inner * self._unit[None, :, 1])
        return np.stack([x, y], axis=2)

    def carry(self, before: Grey, after: Grey, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Boxes (K x 4, frame pixels, on `before`) moved to `after`: (new boxes K x 4 float64,
        ok K bool). Failed boxes come back unchanged with ok False."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        k = len(boxes)
        out, ok = boxes.copy(), np.zeros(k, bool)
        if k == 0:
            return out, ok
        per = self.grid * self.grid
        start = self.points(boxes).reshape(-1, 2) * before.scale
        p0 = start.astype(np.float32).reshape(-1, 1, 2)
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(before.image, after.image, p0, None, **self.lk)
        p0b, st2, _ = cv2.calcOpticalFlowPyrLK(after.image, before.image, p1, None, **self.lk)
        fb = np.linalg.norm((p0b - p0).reshape(-1, 2), axis=1)
        good = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb <= self.fb_max_px)
        a = p0.reshape(k, per, 2).astype(np.float64) / before.scale
        b = p1.reshape(k, per, 2).astype(np.float64) / after.scale
        return self._moved(boxes, a, b, good.reshape(k, per))

    def _moved(self, boxes: np.ndarray, a: np.ndarray, b: np.ndarray, good: np.ndarray):
        """Each box's new position from its surviving point pairs (a -> b, K x P x 2, `good`
        K x P), all boxes at once: (boxes K x 4, ok K)."""
        per = good.shape[1]
        d = b - a
        move = np.stack([_row_median(d[..., 0], good), _row_median(d[..., 1], good)], axis=1)  # K x 2
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        size = np.sqrt(np.maximum(w, 1.0) * np.maximum(h, 1.0))
        spread = _row_median(np.linalg.norm(d - move[:, None, :], axis=2), good)
        i, j = np.triu_indices(per, 1)
        da = np.linalg.norm(a[:, i] - a[:, j], axis=2)
        db = np.linalg.norm(b[:, i] - b[:, j], axis=2)
        pair_ok = good[:, i] & good[:, j] & (da > 1e-3)
        ratio = np.divide(db, da, out=np.ones_like(da), where=da > 1e-3)
        scale = _row_median(ratio, pair_ok)
        scale = np.where(np.isnan(scale), 1.0, scale)
        scale = np.clip(scale, 1 / self.max_scale_step, self.max_scale_step)
        ok = (good.sum(axis=1) >= self.min_points) & (spread <= self.max_spread * size)
        cx = (boxes[:, 0] + boxes[:, 2]) / 2 + move[:, 0]
        cy = (boxes[:, 1] + boxes[:, 3]) / 2 + move[:, 1]
        hw, hh = w * scale / 2, h * scale / 2
        moved = np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1)
        return np.where(ok[:, None], moved, boxes), ok


def _row_median(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The median of each row over its valid entries (NaN for a row with none), vectorised."""
    n = valid.sum(axis=1)
    ordered = np.sort(np.where(valid, values, np.inf), axis=1)
    lo = np.clip((n - 1) // 2, 0, values.shape[1] - 1)
    hi = np.clip(n // 2, 0, values.shape[1] - 1)
    rows = np.arange(len(values))
    median = (ordered[rows, lo] + ordered[rows, hi]) / 2
    return np.where(n > 0, median, np.nan)
