"""Which frames a file run sends to the model with `--infer-every N`.

Inferred: frames 0, N, 2N, ... (by index), the first frame of every shot (a scene cut, found by
`CutDetector` with the same settings as the tracker stage's, so both agree), and the last frame.

The last frame is known only when the reader knows the input ends. A file source already marks
its last frame (`Frame.audio_end`: it reads one frame ahead); a run that stops early
(`--max-frames`) should hand `last=True` for the last frame it takes (the reader holds one frame
back to know). If the last frame still goes uninferred (Ctrl-C), the stage's flush() carries
the held frames' boxes by flow, at most N frames past the last inferred one.
"""

from __future__ import annotations

from typing import Optional

from ..frames import Frame
from .cuts import CutDetector


class InferSchedule:
    """every: N (1: every frame is inferred, and no cut detection runs); cuts: the detector
    (default CutDetector(), as FileTracker's)."""

    def __init__(self, every: int, cuts: Optional[CutDetector] = None):
        if every < 1:
            raise ValueError(f"infer_every must be >= 1, got {every}")
        self.every = every
        self.cuts = cuts or CutDetector()

    def wants(self, frame: Frame, last: Optional[bool] = None) -> bool:
        """Whether to infer `frame`; call once per frame, in order (the cut detector sees every
        frame). last: the frame is the run's last one (None: `frame.audio_end`, the file
        source's own mark)."""
        if self.every == 1:
            return True
        cut = self.cuts.update(frame.image)
        is_last = frame.audio_end if last is None else last
        return frame.index % self.every == 0 or cut or is_last
