"""The trackers with `--infer-on motion`: a parked object keeps its box and id through a long
stretch the policy kept from the model (nothing moved), and is dropped when a later inference no
longer sees it; boxes still vanish when inference was wanted and did not answer; the live tracker
says when a tracked object moves. The stages are built by the run's own factories (parts.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import List

import numpy as np

from streamer import parts
from streamer.frames import Detections, Frame
from streamer.settings import CameraSettings, InferRule, Selection, Tracking
from streamer.states import InferOn, SourceKind

from ..tracking_clips import Scene, Sprite, best_match, render

STEP = 0.2  # seconds between frames (5 fps: a long stretch in few frames)
PARKED = (300, 200, 380, 260)


def parked(frames: int = 70, leaves: int = 55) -> Scene:
    """A car parked from the start, gone from frame `leaves` on."""
    return Scene("parked", frames, [Sprite("car", 3, lambda i: PARKED if i < leaves else None)])


def walking(frames: int = 20) -> Scene:
    return Scene("walking", frames, [Sprite("person", 1, lambda i: (100 + 8 * i, 200, 160 + 8 * i, 300))])


def timed(scene: Scene) -> List[Frame]:
    frames, _ = render(scene)
    return [replace(f, wall_time=f.index * STEP) for f in frames]


def camera(on: InferOn) -> CameraSettings:
    return CameraSettings(name="cam", source="rtsp://cam/1", rule=InferRule(on=on, stationary_interval=10.0))


def live_parts(on: InferOn):
    settings = camera(on)
    policy = parts.infer_policy(settings.rule, settings.tracking, SourceKind.NETWORK)
    return policy, parts.live_tracker(settings, policy)


def car(detections: Detections):
    """(IoU with the parked car, its track id) of the best box (0, None: none)."""
    return best_match({"car": (3, np.array(PARKED, float))}, detections)["car"]


def drive(policy, tracker, frames: List[Frame], answers: dict) -> List[Detections]:
    """Push every frame as a live run does (the policy decides at capture, the tracker draws);
    `answers`: frame index -> (the frame answered, its detections), delivered before that frame."""
    shown = []
    for frame in frames:
        if frame.index in answers:
            answered, detections = answers[frame.index]
            tracker.answer(answered, detections)
        policy.decide(frame)
        ((_, detections),) = list(tracker.push(frame, None))
        shown.append(detections)
    return shown


def boxes(*rows) -> Detections:
    return Detections(np.array(rows, np.float32).reshape(-1, 4), [3] * len(rows), [0.9] * len(rows))


def test_a_parked_car_keeps_its_box_and_id_until_an_inference_no_longer_sees_it():
    frames = timed(parked())
    policy, tracker = live_parts(InferOn.MOTION)
    answers = {2: (frames[0], boxes(PARKED)), 52: (frames[50], boxes(PARKED)), 62: (frames[60], boxes())}
    shown = drive(policy, tracker, frames, answers)
    # the policy kept the still frames from the model: the first and the re-check after 10 s went
    # (and from frame 55 on the car leaving, seen as motion)
    assert [i for i in range(55) if not policy.held_still(i)] == [0, 50]
    ids = set()
    for i in range(2, 62):  # 12 s with two answers: the box stays, with one id
        value, track = car(shown[i])
        assert value > 0.95, (i, value)
        ids.add(track)
    assert ids == {1}
    assert all(len(d) == 0 for d in shown[62:])  # the answer for frame 60 no longer sees it


def test_without_motion_the_box_is_carried_two_seconds_only():
    frames = timed(parked())
    policy, tracker = live_parts(InferOn.ALWAYS)
    shown = drive(policy, tracker, frames, {2: (frames[0], boxes(PARKED))})
    carried = [i for i, d in enumerate(shown) if len(d)]
    assert carried == list(range(2, 11))  # 2 s after the answered frame 0, then no more


def test_boxes_vanish_when_inference_is_wanted_and_does_not_answer():
    """Still until frame 30, then the camera sees motion (a frame is offered) and no answer comes
    (a server down): the box goes 2 s later, not 2 s after its answer (6 s before)."""
    frames = timed(parked(70, leaves=70))
    policy, tracker = live_parts(InferOn.MOTION)
    moving = [False]
    policy.moving_tracks = lambda: moving[0]  # the motion detector sees nothing here: say a track moves
    shown = []
    for frame in frames:
        if frame.index == 2:
            tracker.answer(frames[0], boxes(PARKED))
        moving[0] = frame.index >= 30
        policy.decide(frame)
        ((_, detections),) = list(tracker.push(frame, None))
        shown.append(detections)
    carried = [i for i, d in enumerate(shown) if len(d)]
    assert carried[-1] in (39, 40) and carried == list(range(2, carried[-1] + 1))  # wanted from 6 s: 2 s more


def test_the_live_tracker_says_when_a_tracked_object_moves():
    frames = timed(walking())
    _, tracker = live_parts(InferOn.MOTION)
    person = Detections(np.array([[100, 200, 160, 300]], np.float32), [1], [0.9])
    list(tracker.push(frames[0], None))
    tracker.answer(frames[0], person)
    for frame in frames[1:8]:
        list(tracker.push(frame, None))
    assert tracker.moving
    frames = timed(parked())
    _, tracker = live_parts(InferOn.MOTION)
    list(tracker.push(frames[0], None))
    tracker.answer(frames[0], boxes(PARKED))
    for frame in frames[1:8]:
        list(tracker.push(frame, None))
    assert not tracker.moving


def test_a_file_with_motion_carries_a_parked_car_between_inferences_far_apart():
    frames = [replace(f, pts=f.index * 5) for f in timed(parked())]  # 5 fps media time as well
    settings = Tracking()
    rule = InferRule(on=InferOn.MOTION, stationary_interval=10.0)
    policy = parts.infer_policy(rule, settings, SourceKind.FILE)
    stage = parts.file_tracker(Selection(), settings, policy)
    released = []
    for frame in frames:
        picked = policy.decide(frame, last=frame.index == 69) is None
        released += list(stage.push(frame, boxes(PARKED) if picked and frame.index < 55 else
                                    boxes() if picked else None))
    released += list(stage.flush())
    assert [f.index for f, _ in released] == list(range(70))
    ids = {car(d)[1] for f, d in released[:55]}
    assert ids == {1}  # one id over the 10 s between two inferences, and after
    assert all(car(d)[0] > 0.95 for _, d in released[:55])
