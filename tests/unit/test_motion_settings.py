"""Which frames go to the model, as a user sets it: --infer-on and its companions on run and watch,
`infer_on:`, `stationary_interval:` and `motion:` in camera files (errors name the camera and the
field), the defaults by kind of source; and what a camera shows of it (HUD, view figures, the
live view with --draw-motion, metrics, the accounting by reason)."""

from __future__ import annotations

import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from streamer import parts
from streamer.cli import cli
from streamer.frames import Frame
from streamer.live import CameraFeed
from streamer.metrics import CameraSample, SampleCollector
from streamer.settings import InferRule, MotionSettings, SettingsError, Tracking, load_camera_file
from streamer.stages import PassStage
from streamer.states import CaptureState, InferenceState, InferOn, SourceKind

CAMERAS = """\
defaults:
  infer_on: motion
  stationary_interval: 30
  motion:
    threshold: 40
    mask: "0,0 0.3,0 0.3,0.1 0,0.1"
cameras:
  drive:
    source: rtsp://h/drive
    motion:
      min_area: 0.01
      mask: ["0.5,0.5 1,0.5 1,1", "0,0.9 0.2,0.9 0.2,1"]
  door:
    source: rtsp://h/door
    infer_on: always
  lobby:
    source: rtsp://h/lobby
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cameras.yaml"
    path.write_text(text)
    return path


def test_camera_file_keys_over_the_file_defaults_over_the_flags(tmp_path):
    flags = InferRule(stationary_interval=5.0, motion=MotionSettings(threshold=20.0, min_area=0.002))
    drive, door, lobby = load_camera_file(write(tmp_path, CAMERAS), env={}, rule=flags).cameras
    assert drive.rule.on is InferOn.MOTION and door.rule.on is InferOn.ALWAYS
    assert drive.rule.stationary_interval == 30.0
    assert drive.rule.motion.threshold == 40.0 and drive.rule.motion.min_area == 0.01
    assert drive.rule.motion.mask == (((0.5, 0.5), (1.0, 0.5), (1.0, 1.0)), ((0.0, 0.9), (0.2, 0.9), (0.2, 1.0)))
    assert lobby.rule.motion.mask == (((0.0, 0.0), (0.3, 0.0), (0.3, 0.1), (0.0, 0.1)),)
    assert lobby.rule.motion.min_area == 0.002  # the flag, where the file says nothing
    plain = load_camera_file(write(tmp_path, "cameras:\n  a:\n    source: rtsp://h/a\n"), env={}, rule=flags)
    assert plain.cameras[0].rule == flags


@pytest.mark.parametrize("text, expected", [
    ("cameras:\n  a:\n    source: rtsp://h/a\n    infer_on: sometimes\n", "cameras.a.infer_on: input should be"),
    ("cameras:\n  a:\n    source: rtsp://h/a\n    stationary_interval: 0\n",
     "cameras.a.stationary_interval: input should be greater than 0"),
    ("cameras:\n  a:\n    source: rtsp://h/a\n    motion:\n      threshold: 300\n", "cameras.a.motion.threshold:"),
    ("cameras:\n  a:\n    source: rtsp://h/a\n    motion:\n      treshold: 3\n", "cameras.a.motion.treshold: unknown key"),
    ("cameras:\n  a:\n    source: rtsp://h/a\n    motion:\n      mask: '0,0 1,1'\n",
     "cameras.a.motion.mask: a polygon needs at least 3 points"),
    ("cameras:\n  a:\n    source: rtsp://h/a\n    motion:\n      mask: ['0,0 1,0 1,1', '0,0 5,0 1,1']\n",
     "cameras.a.motion.mask[1]: point '5,0' is outside the picture"),
    ("defaults:\n  motion:\n    mask: 'x'\ncameras:\n  a:\n    source: rtsp://h/a\n", "defaults.motion.mask:"),
    ("cameras:\n  a:\n    source: rtsp://h/a\n    track: false\n    infer_on: motion\n",
     "cameras.a: --infer-on motion needs tracking"),
])
def test_bad_motion_keys_name_the_camera_and_the_field(tmp_path, text, expected):
    with pytest.raises(SettingsError) as info:
        load_camera_file(write(tmp_path, text), env={})
    assert expected in str(info.value)


def test_default_is_motion_for_cameras_and_webcams_always_for_files_and_without_tracking():
    rule = InferRule()
    assert rule.resolved(SourceKind.NETWORK, Tracking()) is InferOn.MOTION
    assert rule.resolved(SourceKind.WEBCAM, Tracking()) is InferOn.MOTION
    assert rule.resolved(SourceKind.FILE, Tracking()) is InferOn.ALWAYS
    assert rule.resolved(SourceKind.NETWORK, Tracking(enabled=False)) is InferOn.ALWAYS
    assert InferRule(on=InferOn.MOTION).resolved(SourceKind.FILE, Tracking()) is InferOn.MOTION
    assert parts.infer_policy(rule, Tracking(), SourceKind.FILE).detector is None  # files: nothing to look at
    assert parts.infer_policy(rule, Tracking(), SourceKind.NETWORK).detector is not None


def test_help_says_the_defaults():
    for command in ("run", "watch"):
        text = CliRunner().invoke(cli, [command, "--help"], terminal_width=200).output
        assert "--infer-on [always|motion]" in text and "--stationary-interval SECONDS" in text
        assert "Default: motion for cameras and webcams, always for files" in " ".join(text.split())
        assert "--draw-motion" in text and "--motion-mask" in text


@pytest.mark.parametrize("args, expected", [
    (["--infer-on", "motion", "--no-track"], "--infer-on motion needs tracking"),
    (["--motion-mask", "0,0 1,1"], "--motion-mask: a polygon needs at least 3 points"),
    (["--stationary-interval", "0"], "Invalid value for '--stationary-interval'"),
    (["--motion-threshold", "255"], "Invalid value for '--motion-threshold'"),
    (["--infer-on", "often"], "Invalid value for '--infer-on'"),
])
def test_bad_flags_are_usage_errors(tmp_path, args, expected):
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "x.mp4"), *args])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output


def test_draw_motion_on_a_file_is_a_usage_error(tmp_path):
    from ..helpers import write_clip

    clip = write_clip(tmp_path / "in.mp4", 2)
    result = CliRunner().invoke(cli, ["run", str(clip), "--draw-motion", "--triton", "127.0.0.1:9"])
    assert result.exit_code == 2, result.output
    assert "--draw-motion draws on the live view" in result.output


# -- what a camera shows of it ------------------------------------------------------------------

class Capture:
    """The little of LiveCapture a feed touches outside a run."""

    running = True
    state = CaptureState.LIVE
    reconnects = 0
    down_reason = None
    last_reason = None
    last_frame_time = None
    offline_seconds = 0.0
    error = None

    def stop(self):
        self.running = False


class Recorder:
    every_frame = True

    def __init__(self):
        self.images = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def write(self, frame, image, detections):
        self.images.append(image)


def still_then_moving(count: int = 40):
    """A still textured picture; from frame 20 on a bright square crosses it."""
    from ..motion_clips import texture

    base = np.repeat(texture(160, 120, 5)[..., None], 3, axis=2).astype(np.uint8)
    for i in range(count):
        image = base.copy()
        if i >= 20:
            x = 10 + 4 * (i - 20)
            image[50:70, x:x + 20] = 255
        yield Frame(i, i, Fraction(1, 25), i / 25, image)


def test_a_camera_feed_offers_moving_frames_and_counts_the_rest_as_still():
    rule = InferRule(on=InferOn.MOTION, stationary_interval=100.0, draw_motion=True)
    policy = parts.infer_policy(rule, Tracking(), SourceKind.NETWORK)
    recorder = Recorder()
    feed = CameraFeed("cam", Capture(), PassStage(), sinks=[recorder], policy=policy,
                      motion_drawer=parts.motion_drawer(rule), wake=threading.Event())
    offered = []
    for frame in still_then_moving():
        feed.emit(frame)
        taken = feed.slot.get(timeout=0)
        if taken is not None:  # as the inference scheduler takes it (and no answer comes here)
            feed.stats.taken += 1
            offered.append(taken.index)
        feed.show_waiting()
        if frame.index == 10:
            assert feed.motion is False and "still" in feed.hud_lines(1.0)[1]
            assert feed.view(1.0, InferenceState.ONLINE).figures["motion"] == 0.0
    assert offered[0] == 0 and all(i >= 20 for i in offered[1:]) and len(offered) >= 15
    assert feed.motion is True and "MOTION" in feed.hud_lines(2.0)[1]
    assert feed.view(2.0, InferenceState.ONLINE).figures["motion"] == 1.0
    stats = feed.finish(0)
    assert stats.skipped_still == 40 - len(offered) and stats.skipped_every == 0
    assert stats.skipped_busy == len(offered)  # taken, never answered: the run ended first
    assert stats.captured == stats.inferred + stats.failed + stats.skipped
    assert f"skipped busy {len(offered)}, every 0, still {stats.skipped_still}" in stats.line()
    report = stats.report("cam", {}).to_json()
    assert report["skipped_by_reason"] == {"busy": len(offered), "every": 0, "still": stats.skipped_still}
    assert report["motion"]["frames"] >= 15
    # --draw-motion: the view shows the regions, the recording never
    last = recorder.images[-1]
    assert not np.array_equal(feed.last_image, last)
    assert np.array_equal(last, list(still_then_moving())[-1].image)


def test_metrics_say_motion_and_skipped_frames_by_reason():
    samples = [CameraSample("drive", 10, 10, 2, 8, 0, 0, True, True, 0.1, motion=True,
                            skipped_by_reason={"busy": 1, "every": 0, "still": 7}),
               CameraSample("door", 10, 10, 10, 0, 0, 0, True, True, 0.1)]
    families = {f.name: f for f in SampleCollector(lambda: samples).collect()}
    motion = families["streamer_motion"].samples
    assert [(s.labels, s.value) for s in motion] == [({"camera": "drive"}, 1)]  # door has no detector
    reasons = {(s.labels["camera"], s.labels["reason"]): s.value
               for s in families["streamer_frames_skipped_by_reason"].samples if s.name.endswith("_total")}
    assert reasons == {("drive", "busy"): 1, ("drive", "every"): 0, ("drive", "still"): 7}
