"""The parts a run is made of, each behind a small interface.

    Source ─Frame─▶ Inference ─Outcome─▶ Stage* ─Detections─▶ Annotator* ─image─▶ Sink* / Display*

A scheduler (`pipeline.FilePipeline` for files, `live.LivePipeline` for cameras, `rerender.render`
for a log) drives the parts and never asks which kind of part it holds. A new capability is one
class behind one of these interfaces, one settings field and one line in a factory
(`runner.factories`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, List, Mapping, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np

from .frames import Detections, Frame, Outcome
from .states import InferenceState, RecordingState, ViewState

Released = Tuple[Frame, Optional[Detections]]


@runtime_checkable
class Source(Protocol):
    """Frames in capture order (a file's decoder, a camera's capture loop)."""

    problem: Optional[str]  # what went wrong with the input, once frames() has ended (None: nothing)

    def frames(self) -> Iterator[Frame]: ...


@dataclass(frozen=True)
class ServerShare:
    """One server's part in a run: its address and the frames it answered."""

    url: str
    frames: int


@runtime_checkable
class Inference(Protocol):
    """Frames to Triton and back, in frame order: one server's stream, or a pool of servers.

    `process` yields one Outcome per frame it took, in the order taken; a source may yield
    `triton.IDLE` (nothing new now) and process() goes on releasing answers meanwhile."""

    state: InferenceState
    reconnects: int  # times the connection to a server was re-established

    def process(self, frames: Iterable[Frame]) -> Iterator[Outcome]: ...

    def abort(self) -> None:
        """From another thread: make process() return soon."""

    def close(self) -> None:
        """Release what the inference holds (a pool's own clients); the session's client stays open."""

    def compute_stats(self) -> Tuple[int, float]:
        """(inferences, compute seconds) the server(s) counted so far."""

    def servers(self) -> List[ServerShare]:
        """Frames answered per server (one entry for a single server)."""

    @property
    def moved(self) -> int:
        """Frames taken back from a server and given to another."""

    @property
    def moved_slow(self) -> int:
        """Frames a slow server held too long: resent to another server (files) or given up (live)."""


@runtime_checkable
class Stage(Protocol):
    """Sees every frame, in capture order, inferred or not, and passes frames on in that order.

    push(frame, detections): `detections` are the model's answer for this frame (after the stages
    before this one), or None when the frame was not inferred or its inference failed. A stage may
    hold frames back and release them later, in order (a file stage waiting for the next inferred
    frame); it returns what it releases now.
    answer(frame, detections): live only: the model's answer for a frame already pushed (answers
    arrive after their frame was shown); what it returns goes to the sinks that keep inferred
    frames only (the detections log).
    flush(): the run ends (or Ctrl-C): release everything held.
    reset(): the source started again (a camera reconnected): forget what was learnt from the frames
    before (tracks); nothing is released.

    On a frame the model saw, no stage moves, drops or invents a box above the threshold; stages may
    add columns (track ids) and fill frames the model did not see.
    """

    def push(self, frame: Frame, detections: Optional[Detections]) -> Iterator[Released]: ...

    def answer(self, frame: Frame, detections: Optional[Detections]) -> Optional[Detections]: ...

    def flush(self) -> Iterator[Released]: ...

    def reset(self) -> None: ...


class PassStage:
    """A stage that changes nothing (a base for stages that only look at detections)."""

    def push(self, frame: Frame, detections: Optional[Detections]) -> Iterator[Released]:
        yield frame, detections

    def answer(self, frame: Frame, detections: Optional[Detections]) -> Optional[Detections]:
        return detections

    def flush(self) -> Iterator[Released]:
        return iter(())

    def reset(self) -> None:
        pass


@runtime_checkable
class Annotator(Protocol):
    """Draws on a copy: annotate(image, detections) -> new image (never in place)."""

    def annotate(self, image: np.ndarray, detections: Detections) -> np.ndarray: ...


@runtime_checkable
class Sink(Protocol):
    """Where drawn frames go (mp4, JSONL, ...): a context manager.

    every_frame: True when the sink takes every frame (a recording); False when it takes only
    frames inference answered or failed (a live run's detections log). In a file run every frame
    is inferred, so both kinds get every frame.
    write(frame, image, detections): `image` is the drawn picture; `detections` what was drawn
    (None: the frame's inference failed, or no detections are held for it)."""

    every_frame: bool

    def __enter__(self) -> "Sink": ...

    def __exit__(self, *exc) -> None: ...

    def write(self, frame: Frame, image: np.ndarray, detections: Optional[Detections]) -> None: ...


@dataclass(frozen=True)
class RecordingStatus:
    """How a camera's recording is doing: its state, why it is not recording (None: it is), the
    files it finished, the frames it could not record, the file being written (None: none), and
    why it last stopped (None: never)."""

    state: RecordingState = RecordingState.RECORDING
    reason: Optional[str] = None
    files: int = 0
    not_recorded: int = 0
    current: Optional[str] = None
    last_failure: Optional[str] = None  # why it last stopped (kept once it records again)

    @property
    def ok(self) -> bool:
        return self.state is RecordingState.RECORDING and not self.not_recorded

    def line(self) -> str:
        """For the HUD and the status line: "recording retrying: REASON"."""
        return f"recording {self.state}" + (f": {self.reason}" if self.reason else "")

    def to_json(self) -> dict:
        return {"state": str(self.state), "reason": self.reason, "files": self.files,
                "not_recorded": self.not_recorded, "current": self.current, "last_failure": self.last_failure}


@dataclass(frozen=True)
class View:
    """One camera as a display shows it.

    image: the newest drawn frame (boxes, no HUD; None before the first frame); hud: the status
    figures as the HUD prints them, one line each; banner: a warning across the picture
    (OFFLINE ..., ENDED), which also says why the state is not UP; frame: the frame the image was
    drawn from (index, wall time); fresh: the image changed since the previous show().
    figures: the same figures by name, as numbers (display_fps, source_fps, detections_per_s,
    frame_age_s, detection_age_s, skipped, reconnects; None: not known yet); detections: what is
    drawn on the image (None: nothing held); outputs: the files this camera writes; recording: how
    its recording is doing (None: it records nothing).
    counts: its zones' and lines' counts (events.Counts; None: it has none); events: its recent
    events, newest last (the page lists them); event_outputs: the run's event outputs' states
    (events.OutputStatus; the same on every camera's view)."""

    name: str
    image: Optional[np.ndarray] = field(default=None, repr=False)
    state: ViewState = ViewState.UP
    hud: Tuple[str, ...] = ()
    banner: Optional[str] = None
    frame: Optional[Frame] = field(default=None, repr=False)
    fresh: bool = True
    figures: Mapping[str, Optional[float]] = field(default_factory=dict)
    detections: Optional[Detections] = field(default=None, repr=False)
    outputs: Tuple[str, ...] = ()
    counts: Optional[object] = field(default=None, repr=False)
    events: Tuple[dict, ...] = field(default=(), repr=False)
    event_outputs: Tuple[object, ...] = field(default=(), repr=False)
    recording: Optional[RecordingStatus] = None  # the camera's recording (None: it records nothing)


@runtime_checkable
class Display(Protocol):
    """Shows every camera's view (the OpenCV window or mosaic; a web page).

    show(views) is called on the main thread each time something changed; it returns False when
    the viewer asked to stop (a window's q/Esc/close). A display nobody watches should cost
    nothing."""

    def __enter__(self) -> "Display": ...

    def __exit__(self, *exc) -> None: ...

    def show(self, views: Sequence[View]) -> bool: ...
