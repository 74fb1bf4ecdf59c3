"""The states and kinds that travel between parts, as enums (never compared as strings).

Each member's value is the word the status lines, the HUD, the metrics and the run report
print, so `str(member)` and f-strings give that word.
"""

from __future__ import annotations

from enum import Enum


class Word(Enum):
    """An enum whose members print as their value."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class InferenceState(Word):
    """Whether inference answers: the display's "inference online/offline"."""

    ONLINE = "online"
    OFFLINE = "offline"  # waiting for a server that went away


class CaptureState(Word):
    """A live camera's capture loop."""

    CONNECTING = "connecting"
    LIVE = "live"
    OFFLINE = "offline"  # lost; reconnecting
    STOPPED = "stopped"  # ended: end of a file camera, --max-frames, the run stopping
    FAILED = "failed"  # given up


class ViewState(Word):
    """What a display shows of one camera: pictures, a camera that is down, or one that ended."""

    CONNECTING = "connecting"  # not delivering yet, no attempt failed so far
    UP = "up"
    OFFLINE = "offline"  # down (not reachable yet, dropped, or given up): the banner says why
    ENDED = "ended"


class SourceKind(Word):
    FILE = "file"
    WEBCAM = "webcam"
    NETWORK = "network"


class Transport(Word):
    """How frames reach Triton: auto (shared memory on this host, else gRPC), gRPC tensors, system shm."""

    AUTO = "auto"
    GRPC = "grpc"
    SHM = "shm"


class StreamKind(Word):
    """A run report's stream: a file (lossless) or a live source."""

    FILE = "file"
    LIVE = "live"


class InferOn(Word):
    """`--infer-on`: which frames are offered to the model."""

    ALWAYS = "always"  # every frame (at most every Nth with --infer-every N)
    MOTION = "motion"  # frames with motion, moving tracks, and a stationary re-check


class SkipReason(Word):
    """Why a frame did not go to the model (the split of `skipped` in reports and metrics)."""

    BUSY = "busy"  # live: inference was busy and took a newer frame (or the run ended first)
    EVERY = "every"  # --infer-every N kept it from the model
    STILL = "still"  # --infer-on motion: nothing moved and no re-check was due


class RecordingState(Word):
    """A live camera's recording: writing, waiting to try again (segments: the disk filled or the
    folder went away), or stopped for the rest of the run (one file)."""

    RECORDING = "recording"
    RETRYING = "retrying"
    STOPPED = "stopped"
