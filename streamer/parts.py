"""Factories: the parts of a run, built from frozen settings.

Each returns parts behind the interfaces of `stages.py`; the runner enters the context managers
and hands the parts to a scheduler. A new sink, stage or display is one class, one settings
field and one line here.
"""

from __future__ import annotations

from contextlib import ExitStack
from fractions import Fraction
from typing import Callable, List, Optional, Sequence

from . import contract
from .selection import HoldDetections, selection_stages
from .settings import CameraSettings, RunSettings, Selection, Tracking, WebSettings
from .stages import Annotator, Display, Inference, Sink, Stage

Say = Callable[[str], None]


def annotators(info: contract.ModelInfo) -> List[Annotator]:
    """What is drawn on every frame with detections: boxes, class names and scores."""
    from .render import BoxAnnotator

    return [BoxAnnotator(info.name_of)]


def file_tracker(selection: Selection, tracking: Tracking):
    """The tracker of a file run (None: --no-track)."""
    if not tracking.enabled:
        return None
    from .tracking import FileTracker

    return FileTracker(infer_every=tracking.infer_every, threshold=selection.threshold)


def file_stages(selection: Selection, label_ids: Optional[Sequence[int]], tracker=None) -> Stage:
    """A file run's stages: the class filter, the tracker (when there is one), the score threshold."""
    return selection_stages(selection.threshold, label_ids, [tracker] if tracker is not None else [])


def file_inference(stream: Inference, tracking: Tracking, cuts=None) -> Inference:
    """--infer-every N > 1: only the frames the schedule picks go to the model. `cuts`: the schedule's
    cut detector as a resumed run restores it (None: a new one)."""
    if tracking.infer_every == 1:
        return stream
    from .sparse import SparseInference
    from .tracking import InferSchedule

    return SparseInference(stream, InferSchedule(tracking.infer_every, cuts=cuts).wants)


def live_tracker(camera: CameraSettings):
    """A camera's tracker (None: --no-track). Boxes are carried at most --hold-detections seconds."""
    if not camera.tracking.enabled:
        return None
    from .tracking import LiveTracker

    if camera.hold_detections is not None:  # 0: boxes only on the frame the model saw
        return LiveTracker(threshold=camera.selection.threshold, max_carry_s=camera.hold_detections)
    return LiveTracker(threshold=camera.selection.threshold)


def camera_stages(camera: CameraSettings, label_ids: Optional[Sequence[int]],
                  latency: Callable[[], Sequence[float]], tracker=None) -> Stage:
    """A camera's stages: the class filter, the tracker (boxes carried onto every shown frame) or,
    without one, the newest answer held on the frames shown after it; then the score threshold.
    `latency`: the camera's recent inference latencies (seconds)."""
    middle = tracker if tracker is not None else HoldDetections(camera.hold_detections, latency)
    return selection_stages(camera.selection.threshold, label_ids, [middle])


def file_sinks(settings: RunSettings, src, info: contract.ModelInfo, label_ids: Optional[Sequence[int]],
               say: Say, outputs=None) -> List[Sink]:
    """The outputs of a file run (`src`: the open sources.FileSource): --out, --detections.
    `outputs`: a resumable run's recording.resume.FileRunOutputs (it names their partial files)."""
    from .detlog import run_fields
    from .sinks import JsonlSink, Mp4Sink

    if outputs is not None:
        extra = run_fields(src.info, settings.selection.threshold, label_ids)
        return outputs.sinks(
            lambda part, first_pts: Mp4Sink.for_file(src.info, src.audio_tracks, settings.out, say, partial=part,
                                                     first_pts=first_pts, finish=False),
            lambda target, partial, append: JsonlSink(target, info.name_of, extra, partial=partial, append=append))
    sinks: List[Sink] = []
    if settings.out is not None:
        sinks.append(Mp4Sink.for_file(src.info, src.audio_tracks, settings.out, say))
    if settings.detections is not None:
        sinks.append(JsonlSink(settings.detections, info.name_of,
                               run_fields(src.info, settings.selection.threshold, label_ids)))
    return sinks


def camera_recording(camera: CameraSettings, info: contract.ModelInfo, rate: Optional[Fraction], say: Say):
    """A camera's recording (one file, or segments with retention) and detections log, both going on
    (and saying so) when their disk fills: a recording.segments.CameraRecording."""
    from .capture import TIME_BASE
    from .recording.segments import CameraRecording, LiveLog, LiveRecorder
    from .sinks import JsonlSink

    recorder = log = None
    if camera.record is not None:
        recorder = LiveRecorder(camera.record, rate, TIME_BASE, segment_s=camera.segment, retain=camera.retain,
                                camera=camera.name, log=say)
    if camera.detections is not None:
        log = LiveLog(JsonlSink(camera.detections, info.name_of), camera=camera.name, log=say)
    return CameraRecording(recorder, log)


def camera_sinks(camera: CameraSettings, info: contract.ModelInfo, rate: Optional[Fraction],
                 stack: ExitStack, recording=None) -> List[Sink]:
    """A camera's outputs: its recording (every frame, opened at the first frame's size) and its
    detections log (inferred frames), from `recording` (camera_recording's, made here when None).
    Files opened later are closed by `stack`."""
    recording = recording if recording is not None else camera_recording(camera, info, rate, lambda message: None)
    sinks: List[Sink] = list(recording.sinks)
    return sinks


def displays(show: bool, title: str, paced: bool = False) -> List[Display]:
    """--show: the window (one camera with its HUD, or the mosaic; a file played at its own pace)."""
    found: List[Display] = []
    if show:
        from .window import WindowDisplay

        found.append(WindowDisplay(title, paced=paced))
    return found


def web_display(web: Optional[WebSettings], info: contract.ModelInfo):
    """--web: the browser live view (None when not asked for)."""
    if web is None:
        return None
    from .web import WebDisplay

    return WebDisplay(web.host, web.port, name_of=info.name_of, token=web.token,
                      allowed_hosts=web.allowed_hosts, max_viewers=web.max_viewers)
