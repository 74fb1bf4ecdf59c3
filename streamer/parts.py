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
from .settings import CameraSettings, EventSettings, InferRule, RunSettings, Selection, Tracking, WebSettings
from .stages import Annotator, Display, Inference, Sink, Stage
from .states import InferOn, SourceKind

Say = Callable[[str], None]


def annotators(info: contract.ModelInfo) -> List[Annotator]:
    """What is drawn on every frame with detections: boxes, class names and scores."""
    from .render import BoxAnnotator

    return [BoxAnnotator(info.name_of)]


def infer_policy(rule: InferRule, tracking: Tracking, kind: SourceKind):
    """Which frames of one file or camera go to the model (policy.InferPolicy): --infer-on,
    --infer-every, cuts, the motion detector (with motion, or --draw-motion), --stationary-interval."""
    from .grey import FLOW_WIDTH
    from .motion import MotionDetector
    from .policy import InferPolicy
    from .tracking import capture_time, media_time

    on = rule.resolved(kind, tracking)
    detector = None
    if on is InferOn.MOTION or rule.draw_motion:
        m = rule.motion
        # with a tracker (or a cut test) the frame's grey copy for flow is made anyway: start from it
        detector = MotionDetector(threshold=m.threshold, min_area=m.min_area, mask=m.mask,
                                  source_width=FLOW_WIDTH if tracking.enabled else None)
    return InferPolicy(on, tracking.infer_every, rule.stationary_interval, detector,
                       clock=media_time if kind is SourceKind.FILE else capture_time)


def motion_drawer(rule: InferRule):
    """--draw-motion: (image, Motion) -> the live view's image with the motion regions and masks
    (None when not asked for)."""
    if not rule.draw_motion:
        return None
    from functools import partial

    from .render import draw_motion

    return partial(draw_motion, masks=rule.motion.mask)


def still_tracker(threshold: float, stationary_s: float):
    """The id tracker with motion: between two answers may pass a whole stationary interval (or
    two, when the server is shared), so a track is kept that long without a match."""
    from .tracking import Tracker

    return Tracker(threshold=threshold, max_age_s=max(2.0, 2 * stationary_s + 2.0))


def file_tracker(selection: Selection, tracking: Tracking, policy=None):
    """The tracker of a file run (None: --no-track). With motion (`policy`), tracks are carried
    through every frame not inferred until the next inferred one (nothing moved in them)."""
    if not tracking.enabled:
        return None
    from .tracking import FileTracker

    if policy is not None and policy.on is InferOn.MOTION:
        return FileTracker(infer_every=tracking.infer_every, threshold=selection.threshold, carry_frames=float("inf"),
                           sparse=True, tracker=still_tracker(selection.threshold, policy.stationary_s))
    return FileTracker(infer_every=tracking.infer_every, threshold=selection.threshold)


def file_stages(selection: Selection, label_ids: Optional[Sequence[int]], tracker=None, events=None) -> Stage:
    """A file run's stages: the class filter, the tracker (when there is one), the score threshold,
    then the event stage (when there is one)."""
    return selection_stages(selection.threshold, label_ids, [tracker] if tracker is not None else [],
                            [events] if events is not None else [])


def file_inference(stream: Inference, policy) -> Inference:
    """--infer-every N > 1 or --infer-on motion: only the frames the policy picks go to the model."""
    if policy.on is InferOn.ALWAYS and policy.every == 1:
        return stream
    from .sparse import SparseInference

    return SparseInference(stream, policy.decide)


def live_tracker(camera: CameraSettings, policy=None):
    """A camera's tracker (None: --no-track). Boxes are carried at most --hold-detections seconds
    (2 s by default) of frames inference was wanted for; frames the policy kept from the model
    because nothing moved do not count, so a parked car keeps its box and id until an inference
    no longer sees it. The policy learns from it whether a tracked object moves."""
    if not camera.tracking.enabled:
        return None
    from .tracking import LiveTracker
    from .tracking.live_stage import MAX_CARRY_S

    motion = policy is not None and policy.on is InferOn.MOTION
    tracker = LiveTracker(
        threshold=camera.selection.threshold,  # hold 0: boxes only on the first frame shown after each answer
        max_carry_s=camera.hold_detections if camera.hold_detections is not None else MAX_CARRY_S,
        still=policy.held_still if policy is not None else None,
        tracker=still_tracker(camera.selection.threshold, policy.stationary_s) if motion else None)
    if policy is not None:
        policy.moving_tracks = lambda: tracker.moving
    return tracker


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
