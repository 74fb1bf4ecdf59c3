"""A constant-velocity Kalman filter for one box, driven by time in seconds.

The box is (cx, cy, w, h); each of the four coordinates is its own 1-D constant-velocity filter
(position and velocity), so the state is 4 x 2 and the covariance 4 x (2 x 2). Time steps are
whatever the frames give (live frame gaps are uneven; a file's steps come from its timestamps).

The filter changes only when a detection updates it; `predict(t)` is pure (the box expected at
any later time, without touching the state). All of it is an estimate: the model assumes steady
motion plus random acceleration, which real objects only roughly follow.
"""

from __future__ import annotations

import numpy as np

# Standard deviations, as fractions of the box size (sqrt(w * h)):
MEASUREMENT_STD = 0.05  # a detection's box jitter
ACCELERATION_STD = 1.0  # random acceleration, per second squared (how fast motion may change)
INITIAL_VELOCITY_STD = 2.0  # per second: a new track's velocity is unknown


def box_to_state(box: np.ndarray) -> np.ndarray:
    """x1 y1 x2 y2 -> cx cy w h (float64)."""
    x1, y1, x2, y2 = np.asarray(box, np.float64)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])


def state_to_box(cxcywh: np.ndarray) -> np.ndarray:
    """cx cy w h -> x1 y1 x2 y2 (float64); sizes are kept at 1 px at least."""
    cx, cy, w, h = cxcywh
    w, h = max(w, 1.0), max(h, 1.0)
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


class BoxKalman:
    """State at `time` (seconds): positions mean[:, 0] = (cx, cy, w, h), velocities mean[:, 1]."""

    def __init__(self, box: np.ndarray, time: float):
        self.mean = np.zeros((4, 2))
        self.mean[:, 0] = box_to_state(box)
        size = self._size()
        self.cov = np.zeros((4, 2, 2))
        self.cov[:, 0, 0] = (MEASUREMENT_STD * size) ** 2
        self.cov[:, 1, 1] = (INITIAL_VELOCITY_STD * size) ** 2
        self.time = float(time)

    def _size(self) -> float:
        return float(np.sqrt(max(self.mean[2, 0], 1.0) * max(self.mean[3, 0], 1.0)))

    def _propagated(self, dt: float):
        """(mean, cov) moved on by dt seconds (dt >= 0)."""
        f = np.array([[1.0, dt], [0.0, 1.0]])
        q = (ACCELERATION_STD * self._size()) ** 2 * np.array([[dt ** 3 / 3, dt ** 2 / 2], [dt ** 2 / 2, dt]])
        mean = self.mean @ f.T
        cov = f @ self.cov @ f.T + q
        return mean, cov

    def predict(self, time: float) -> np.ndarray:
        """The box (x1 y1 x2 y2) expected at `time`; the state is unchanged. Times before the
        state's own give the state's box (the filter never runs backwards)."""
        dt = max(0.0, time - self.time)
        return state_to_box(self.mean[:, 0] + self.mean[:, 1] * dt)

    def velocity(self) -> np.ndarray:
        """d(cx, cy, w, h)/dt, pixels per second."""
        return self.mean[:, 1].copy()

    def update(self, box: np.ndarray, time: float) -> None:
        """Move the state to `time` and correct it with a measured box (a detection)."""
        mean, cov = self._propagated(max(0.0, time - self.time))
        measured = box_to_state(box)
        r = (MEASUREMENT_STD * float(np.sqrt(max(measured[2], 1.0) * max(measured[3], 1.0)))) ** 2
        innovation = measured - mean[:, 0]
        s = cov[:, 0, 0] + r  # (4,)
        gain = cov[:, :, 0] / s[:, None]  # (4, 2)
        self.mean = mean + gain * innovation[:, None]
        self.cov = cov - gain[:, :, None] * cov[:, 0, :][:, None, :]
        self.time = max(self.time, float(time))
