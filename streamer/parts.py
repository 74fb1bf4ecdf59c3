"""Factories: the parts of a run, built from frozen settings.

Each returns parts behind the interfaces of `stages.py`; the runner enters the context managers
and hands the parts to a scheduler. A new sink, stage or display is one class, one settings
field and one line here.
"""

from __future__ import annotations

from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from . import contract
from .selection import HoldDetections, selection_stages
from .settings import CameraSettings, EventSettings, RunSettings, Selection, Tracking, WebSettings
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


def file_stages(selection: Selection, label_ids: Optional[Sequence[int]], tracker=None, events=None) -> Stage:
    """A file run's stages: the class filter, the tracker (when there is one), the score threshold,
    then the event stage (when there is one)."""
    return selection_stages(selection.threshold, label_ids, [tracker] if tracker is not None else [],
                            [events] if events is not None else [])


def file_inference(stream: Inference, tracking: Tracking) -> Inference:
    """--infer-every N > 1: only the frames the schedule picks go to the model."""
    if tracking.infer_every == 1:
        return stream
    from .sparse import SparseInference
    from .tracking import InferSchedule

    return SparseInference(stream, InferSchedule(tracking.infer_every).wants)


def live_tracker(camera: CameraSettings):
    """A camera's tracker (None: --no-track). Boxes are carried at most --hold-detections seconds."""
    if not camera.tracking.enabled:
        return None
    from .tracking import LiveTracker

    if camera.hold_detections is not None:  # 0: boxes only on the first frame shown after each answer
        return LiveTracker(threshold=camera.selection.threshold, max_carry_s=camera.hold_detections)
    return LiveTracker(threshold=camera.selection.threshold)


def camera_stages(camera: CameraSettings, label_ids: Optional[Sequence[int]],
                  latency: Callable[[], Sequence[float]], tracker=None, events=None) -> Stage:
    """A camera's stages: the class filter, the tracker (boxes carried onto every shown frame) or,
    without one, the newest answer held on the frames shown after it; then the score threshold,
    then the event stage (when there is one). `latency`: the camera's recent inference latencies
    (seconds)."""
    middle = tracker if tracker is not None else HoldDetections(camera.hold_detections, latency)
    return selection_stages(camera.selection.threshold, label_ids, [middle], [events] if events is not None else [])


def event_outputs(events: EventSettings, say: Say) -> List:
    """Where events go (run-wide, every camera's): --events FILE, --mqtt, --webhook (each URL),
    --snapshots, --clips. Each is an `events.EventOutput` (a context manager the runner enters;
    publish() never blocks)."""
    from .events.outputs import JsonlEvents

    found: List = []
    if events.jsonl is not None:
        found.append(JsonlEvents(events.jsonl, say))
    if events.mqtt is not None:
        from .events.mqtt import MqttOutput

        found.append(MqttOutput(events.mqtt, say))
    if events.webhooks is not None:
        from .events.webhook import WebhookOutput

        several = len(events.webhooks.urls) > 1
        found.extend(WebhookOutput(url, events.webhooks, say, index=i + 1 if several else None)
                     for i, url in enumerate(events.webhooks.urls))
    if events.snapshots is not None:
        from .events.snapshots import SnapshotOutput

        found.append(SnapshotOutput(events.snapshots, say))
    if events.clips is not None:
        from .events.clips import ClipOutput

        found.append(ClipOutput(events.clips, say))
    return found


def event_stage(name: str, regions, name_of: Callable[[int], str], fanout, live: bool, tracking: Tracking):
    """A camera's (or file's) event stage: zones, lines, new/update/end events (None when it has
    no zones or lines and no event output listens, or without tracking: events follow track ids)."""
    if not tracking.enabled or (not regions and not fanout):
        return None
    from .events.config import FILE_MIN_FRAMES, LIVE_MIN_FRAMES, Regions
    from .events.stage import EventStage

    return EventStage(name, regions or Regions(), name_of, sink=fanout, live=live,
                      min_frames=LIVE_MIN_FRAMES if live else FILE_MIN_FRAMES)


def region_annotators(stage) -> List[Annotator]:
    """The zones and lines of an event stage, drawn with their counts (none without zones or lines)."""
    if stage is None or not stage.regions:
        return []
    from .events.overlay import RegionsAnnotator

    return [RegionsAnnotator(stage.geometry, stage.counts)]


def file_sinks(settings: RunSettings, src, info: contract.ModelInfo, label_ids: Optional[Sequence[int]],
               say: Say) -> List[Sink]:
    """The outputs of a file run (`src`: the open sources.FileSource): --out, --detections."""
    from .detlog import run_fields
    from .sinks import JsonlSink, Mp4Sink

    sinks: List[Sink] = []
    if settings.out is not None:
        sinks.append(Mp4Sink.for_file(src.info, src.audio_tracks, settings.out, say))
    if settings.detections is not None:
        sinks.append(JsonlSink(settings.detections, info.name_of,
                               run_fields(src.info, settings.selection.threshold, label_ids)))
    return sinks


def camera_sinks(camera: CameraSettings, info: contract.ModelInfo, rate: Optional[Fraction],
                 stack: ExitStack) -> List[Sink]:
    """A camera's outputs: its recording (every frame, opened at the first frame's size) and its
    detections log (inferred frames). Files opened later are closed by `stack`."""
    from .capture import TIME_BASE
    from .live import RecordingSink
    from .sinks import JsonlSink, Mp4Sink

    sinks: List[Sink] = []
    if camera.record is not None:
        def open_mp4(width: int, height: int, path: Path = camera.record) -> Mp4Sink:
            return stack.enter_context(Mp4Sink(path, width, height, TIME_BASE, rate))

        sinks.append(RecordingSink(open_mp4))
    if camera.detections is not None:
        sinks.append(JsonlSink(camera.detections, info.name_of))
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
