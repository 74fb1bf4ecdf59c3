"""The inference scheduler's choice: the camera served least recently among those with a new frame."""

from __future__ import annotations

import threading
from fractions import Fraction

import numpy as np

from streamer.frames import Detections, Frame, Outcome
from streamer.live import CameraFeed, InferenceScheduler
from streamer.stages import PassStage
from streamer.states import CaptureState, InferenceState
from streamer.triton import IDLE


class Capture:
    """The little of LiveCapture a feed touches outside a run."""

    running = True
    state = CaptureState.LIVE
    reconnects = 0
    down_reason = None
    last_reason = None

    def stop(self):
        self.running = False


def feed(name: str) -> CameraFeed:
    return CameraFeed(name=name, capture=Capture(), stages=PassStage())


def frame(index: int, t: float) -> Frame:
    return Frame(index=index, pts=index, time_base=Fraction(1, 25), wall_time=t, image=np.zeros((2, 2, 3), np.uint8))


def simulate(rates, phases, inference_s: float, seconds: float):
    """Cameras at `rates` fps (capture phases in s) and one request in flight taking inference_s."""
    feeds = [feed(f"cam{i}") for i in range(len(rates))]
    scheduler = InferenceScheduler(feeds, inference=None, wake=threading.Event())
    last = [-1] * len(rates)
    served = [0] * len(rates)
    t = 0.0
    while t < seconds:
        for i, (rate, phase) in enumerate(zip(rates, phases)):
            newest = int((t - phase) * rate) if t >= phase else -1
            if newest > last[i]:
                last[i] = newest
                feeds[i].slot.put(frame(newest, phase + newest / rate))
        chosen = scheduler.pick()
        if chosen is None:
            t += 0.001
            continue
        chosen.slot.get(timeout=0)
        chosen.last_served = t
        served[feeds.index(chosen)] += 1
        t += inference_s
    return served


def test_four_25fps_cameras_share_inference_evenly_whatever_their_phase():
    served = simulate([25, 25, 25, 25], [0.0, 0.013, 0.027, 0.039], inference_s=0.13, seconds=120)
    assert max(served) - min(served) <= 1, served


def test_a_slow_camera_refreshes_as_often_as_a_fast_one():
    # 5 fps and 30 fps: each inference takes 0.1 s, so the 5 fps camera has a frame every other slot
    served = simulate([30, 5], [0.0, 0.02], inference_s=0.1, seconds=60)
    assert abs(served[0] - served[1]) <= 0.2 * max(served), served


def test_a_camera_without_new_frames_takes_nothing():
    feeds = [feed("up"), feed("down")]
    scheduler = InferenceScheduler(feeds, inference=None, wake=threading.Event())
    feeds[0].slot.put(frame(0, 1.0))
    assert scheduler.pick() is feeds[0]
    feeds[0].slot.get(timeout=0)
    assert scheduler.pick() is None


def test_ties_go_to_the_older_frame():
    a, b = feed("a"), feed("b")
    scheduler = InferenceScheduler([a, b], inference=None, wake=threading.Event())
    a.slot.put(frame(5, 2.0))
    b.slot.put(frame(9, 1.5))
    assert scheduler.pick() is b  # neither served yet: b's frame is older


class ScriptedStream:
    """An inference stream that answers each frame with its own index as one detection's label."""

    state = InferenceState.ONLINE
    reconnects = 0

    def __init__(self):
        self.aborted = threading.Event()

    def process(self, frames):
        for f in frames:
            if f is IDLE:
                continue
            yield Outcome(f, Detections(np.zeros((1, 4)), [f.index], [1.0]), None, 0.01)
            if self.aborted.is_set():
                return

    def abort(self):
        self.aborted.set()


def test_results_go_back_to_their_own_camera_and_frame():
    a, b = feed("a"), feed("b")
    scheduler = InferenceScheduler([a, b], ScriptedStream(), wake=threading.Event())
    scheduler.start()
    try:
        a.slot.put(frame(7, 1.0))
        b.slot.put(frame(7, 1.1))  # the same camera index on both: the stream sees distinct ids
        outcomes = [a.outcomes.get(timeout=10), b.outcomes.get(timeout=10)]
    finally:
        scheduler.stop()
        scheduler.join(10)
    assert [o.frame.index for o in outcomes] == [7, 7]
    assert outcomes[0].frame.wall_time == 1.0 and outcomes[1].frame.wall_time == 1.1
    sent = {int(o.detections.labels[0]) for o in outcomes}
    assert len(sent) == 2  # two distinct request ids
