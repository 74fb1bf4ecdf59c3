"""Track ids and boxes between inferences (issue 16).

    FileTracker   the Stage of a file run with --infer-every N (holds frames, interpolates)
    LiveTracker   the Stage of a live run (carries boxes onto every displayed frame)

Which frames the model sees is decided before inference, by `streamer.policy.InferPolicy`
(--infer-every, cuts, motion); these stages fill the frames it did not see.

The parts, one job each: `bytetrack` (ids: two-round ByteTrack matching, ageing in seconds),
`kalman` (constant-velocity box model in seconds), `assign` (IoU, optimal assignment), `flow`
(sparse optical flow for boxes), `carry` (one step of carrying tracks), `cuts` (scene cuts),
`columns` (how made boxes are marked in Detections.data).

Exact: on a frame the model saw, the boxes are the model's own (rows, order, values) with a
`track_ids` column added. Estimated: every box on a frame the model did not see.
"""

from .bytetrack import NO_ID, Track, Tracker
from .columns import AGE, ESTIMATE, FLOW, INTERPOLATED, PREDICTED, TRACKED, is_tracked
from .cuts import CutDetector
from .file_stage import DEFAULT_MEMORY_CAP, FileTracker, media_time
from .flow import Flow, prepare
from .live_stage import LiveTracker, capture_time

__all__ = [
    "AGE", "CutDetector", "DEFAULT_MEMORY_CAP", "ESTIMATE", "FLOW", "FileTracker", "Flow", "INTERPOLATED",
    "LiveTracker", "NO_ID", "PREDICTED", "TRACKED", "Track", "Tracker", "capture_time",
    "is_tracked", "media_time", "prepare",
]
