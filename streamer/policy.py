"""Which frames go to the model: one `InferPolicy` per camera or file, asked for every frame.

The file scheduler asks it through `sparse.SparseInference` (a frame not picked is passed on
without inference, for the tracker to fill); the live scheduler asks it as each frame is captured
(a frame picked is offered to inference, which takes the newest offered frame whenever it is
free). Its inputs:

- `--infer-every N`: at most every Nth frame;
- scene cuts (`tracking.cuts.CutDetector`, the same test the tracker stage makes, on the same
  shared grey copy, so both agree): the first frame of every shot is inferred;
- the first frame (of the run, of a camera's new connection) and, in files, the last one;
- `--infer-on motion`: only frames where the motion detector (`streamer.motion`) sees motion
  (or a change of the whole picture: one frame when its background is replaced), where a
  tracked object is moving (live: `moving_tracks`, the tracker's say), or where
  `stationary_s` seconds have passed since the last frame picked (a parked car is confirmed, a
  still object that appeared is found). `--infer-every N` still caps how often during motion.

    always, N = 1   every frame (no cut test, no motion test)
    always, N > 1   frames 0, N, 2N, ..., each shot's first, the last
    motion, N >= 1  the first, the last, each shot's first; else frames with motion, a moving
                    track or a re-check due, at least N frames after the previous one picked

`decide(frame)` answers None (infer it) or the reason it is not inferred (`SkipReason.EVERY`,
`SkipReason.STILL`), which reports and metrics count apart. Call it once per frame, in order.
Times are the clock's (media time in files, capture time live): a file's schedule depends on
its frames only, so two runs of one file infer the same frames.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Deque, Optional, Tuple

from .frames import Frame
from .motion import Motion, MotionDetector
from .states import InferOn, SkipReason
from .tracking.cuts import CutDetector
from .tracking.file_stage import media_time

DEFAULT_STATIONARY_S = 10.0
RECENT = 256  # decisions kept for `held_still` (a live display lags a few frames behind capture)


def no_moving_tracks() -> bool:
    """A file run's policy: no tracker tells it about moving tracks (files infer on motion alone)."""
    return False


class InferPolicy:
    """on: always or motion; every: N; stationary_s: the re-check interval with motion (seconds);
    motion: the detector (needed with motion; with always, optional: it then only informs the
    HUD and --draw-motion); cuts: the cut test (default CutDetector()); clock: a frame's time.
    `moving_tracks`: whether a tracked object moves now (set by whoever builds the tracker)."""

    def __init__(self, on: InferOn = InferOn.ALWAYS, every: int = 1, stationary_s: float = DEFAULT_STATIONARY_S,
                 motion: Optional[MotionDetector] = None, cuts: Optional[CutDetector] = None,
                 clock: Callable[[Frame], float] = media_time):
        if every < 1:
            raise ValueError(f"infer_every must be >= 1, got {every}")
        if on is InferOn.MOTION and motion is None:
            raise ValueError("inferring on motion needs a motion detector")
        if not stationary_s > 0:
            raise ValueError(f"the stationary interval must be more than 0 seconds, got {stationary_s}")
        self.on = on
        self.every = every
        self.stationary_s = stationary_s
        self.detector = motion
        self.cuts = cuts or CutDetector()
        self.clock = clock
        self.moving_tracks: Callable[[], bool] = no_moving_tracks  # live: the tracker says (a module function: pickles)
        self.motion: Optional[Motion] = None  # the latest frame's (None: no detector, or no frame yet)
        self.moved = 0  # frames that showed motion
        self._picked: Optional[Tuple[int, float]] = None  # (index, time) of the latest frame picked
        self._recent: Deque[Tuple[int, Optional[SkipReason]]] = deque(maxlen=RECENT)

    @property
    def sees_motion(self) -> Optional[bool]:
        """Whether the latest frame showed motion (None: no motion detector)."""
        if self.detector is None:
            return None
        return self.motion is not None and self.motion.moving

    def reset(self) -> None:
        """A new stream (a camera reconnected): its first frame is picked; no background, no shot."""
        self._picked = None
        self.cuts.reset()
        if self.detector is not None:
            self.detector.reset()

    def decide(self, frame: Frame, last: Optional[bool] = None) -> Optional[SkipReason]:
        """None: infer `frame`; else why not. last: the frame is the run's last (None: the file
        source's own mark, `frame.audio_end`; live streams have none)."""
        skip = self._decide(frame, frame.audio_end if last is None else last)
        if skip is None:
            self._picked = (frame.index, self.clock(frame))
        self._recent.append((frame.index, skip))
        return skip

    def held_still(self, index: int) -> bool:
        """Whether the recent frame `index` was kept from the model because nothing moved (a
        tracker carries boxes through such frames as long as it likes: nothing moved)."""
        for seen, skip in reversed(list(self._recent)):  # a copy: the capture thread appends meanwhile
            if seen == index:
                return skip is SkipReason.STILL
        return False

    def _decide(self, frame: Frame, last: bool) -> Optional[SkipReason]:
        time = self.clock(frame)
        cut = False
        if self.on is InferOn.MOTION or self.every > 1:
            cut = self.cuts.update_frame(frame)
        if self.detector is not None:
            if cut:  # a new shot: its first frame is the background
                self.detector.reset()
            self.motion = self.detector.detect(frame, time)
            self.moved += self.motion.moving
        if self.on is InferOn.ALWAYS and self.every == 1:
            return None
        if self._picked is None or last or cut:
            return None
        if self.on is InferOn.ALWAYS:
            return None if frame.index % self.every == 0 else SkipReason.EVERY
        due = time - self._picked[1] >= self.stationary_s
        if not (self.motion.moving or self.motion.rebaselined or due or self.moving_tracks()):
            return SkipReason.STILL
        if frame.index - self._picked[0] < self.every:
            return SkipReason.EVERY
        return None
