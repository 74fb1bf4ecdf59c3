"""The two values that flow through the pipeline: a Frame and its Detections.

Images are always RGB, H x W x 3, uint8. The only BGR conversion lives in
`to_bgr` / `from_bgr`, used where OpenCV reads or writes files.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import numpy as np

from .states import SkipReason


def from_bgr(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR (or BGRA / gray) image -> our RGB uint8."""
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image[:, :, ::-1])


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Our RGB image -> OpenCV's BGR."""
    return np.ascontiguousarray(image[:, :, ::-1])


def frame_step(rate: Optional[Fraction], time_base: Optional[Fraction]) -> int:
    """How long one frame at `rate` lasts, in `time_base` units (1 when either is unknown)."""
    if rate and time_base:
        return max(1, round(1 / (rate * time_base)))
    return 1


@dataclass(frozen=True)
class AudioChunk:
    """One piece of a file's audio travelling beside the video (never through inference).

    track: position in the source's audio plan; item: an av.Packet (track copied) or an
    av.AudioFrame (track transcoded); time: its start in seconds on the source's clock.
    """

    track: int
    item: object = field(repr=False)
    time: Fraction


@dataclass(frozen=True)
class Frame:
    """One decoded picture.

    index: 0-based position in capture order.
    pts, time_base: presentation timestamp from the container (None when the
        source has none); pts * time_base is the time in seconds.
    wall_time: time.monotonic() when the frame was captured/decoded.
    image: H x W x 3 RGB uint8.
    duration: how long the frame shows, in time_base units (None: unknown).
    audio: the audio demuxed since the previous frame, muxed just before this frame.
    audio_end: True on a file's last frame: `audio` holds the rest of the input's audio.
    derived: small pictures computed from `image` once and shared by whoever needs them (the
        grey copy that flow, the cut test and the motion detector read: `streamer.grey.grey_of`);
        not an argument, and not copied by `dataclasses.replace` (a new image gets its own).
    """

    index: int
    pts: Optional[int]
    time_base: Optional[Fraction]
    wall_time: float
    image: np.ndarray = field(repr=False)
    duration: Optional[int] = None
    audio: Tuple[AudioChunk, ...] = ()
    audio_end: bool = False
    derived: Dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def time(self) -> Optional[float]:
        if self.pts is None or self.time_base is None:
            return None
        return float(self.pts * self.time_base)

    def without_image(self) -> "Frame":
        """The frame's index, stamps and times without its picture and audio: what a part keeps
        of a frame it no longer draws (an object's last sighting, a frame queued for an encoder
        that takes the drawn picture)."""
        return replace(self, image=_NO_IMAGE, audio=())


_NO_IMAGE = np.zeros((0, 0, 3), np.uint8)

BOX_DECIMALS = 2  # what a detections log (JSONL) keeps of a box coordinate (pixels)
SCORE_DECIMALS = 4  # ... and of a score


@dataclass(frozen=True)
class Detections:
    """Parallel arrays: boxes N x 4 (x1, y1, x2, y2 in frame pixels, float32),
    labels N (torchvision COCO category ids, int64), scores N (float32), and optional columns:
    track_ids N (int64; None = no tracking, -1 = this box has no id) and `data`, extra
    per-detection columns by name (each N rows). Masking, slicing and rounding carry every column."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    track_ids: Optional[np.ndarray] = None
    data: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if not (len(boxes) == len(labels) == len(scores)):
            raise ValueError(
                f"detections disagree in length: {len(boxes)} boxes, "
                f"{len(labels)} labels, {len(scores)} scores"
            )
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "scores", scores)
        if self.track_ids is not None:
            ids = np.asarray(self.track_ids, dtype=np.int64).reshape(-1)
            if len(ids) != len(scores):
                raise ValueError(f"detections disagree in length: {len(scores)} scores, {len(ids)} track ids")
            object.__setattr__(self, "track_ids", ids)
        data = {}
        for name, column in dict(self.data).items():
            column = np.asarray(column)
            if len(column) != len(scores):
                raise ValueError(f"detections disagree in length: {len(scores)} scores, "
                                 f"{len(column)} rows of {name!r}")
            data[name] = column
        object.__setattr__(self, "data", data)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index) -> "Detections":
        """Rows by a boolean mask, an index array or a slice; every column comes along."""
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1 or None)
        return Detections(self.boxes[index], self.labels[index], self.scores[index],
                          None if self.track_ids is None else self.track_ids[index],
                          {name: column[index] for name, column in self.data.items()})

    def replace(self, **columns) -> "Detections":
        """A copy with some columns replaced (boxes=, labels=, scores=, track_ids=, data=)."""
        values = {"boxes": self.boxes, "labels": self.labels, "scores": self.scores,
                  "track_ids": self.track_ids, "data": self.data}
        values.update(columns)
        return Detections(**values)

    def above(self, threshold: float) -> "Detections":
        """Only the detections scored >= threshold."""
        return self[self.scores >= threshold]

    def quantized(self) -> "Detections":
        """Boxes and scores rounded as the JSONL log keeps them: what is drawn is what the log can
        redraw (`streamer render`), down to the drawing order of equal scores."""
        return self.replace(boxes=np.round(self.boxes, BOX_DECIMALS), scores=np.round(self.scores, SCORE_DECIMALS))

    def with_labels(self, labels: Optional[Iterable[int]]) -> "Detections":
        """Only the detections whose label is in `labels` (None keeps all)."""
        if labels is None:
            return self
        return self[np.isin(self.labels, np.fromiter(labels, dtype=np.int64))]


@dataclass(frozen=True)
class Outcome:
    """One frame after inference: detections, or None and the error when it failed; or, not sent
    to the model at all (`--infer-every`, `--infer-on motion`), None, no error, and `skipped`: why."""

    frame: Frame
    detections: Optional[Detections]
    error: Optional[str] = None
    latency: Optional[float] = None  # seconds from sending to the answer (last attempt)
    unavailable: bool = False  # failed because the server was unreachable (not because of the frame)
    skipped: Optional[SkipReason] = None  # not sent to the model, and why

    @property
    def ok(self) -> bool:
        return self.detections is not None
