"""A live camera left running for weeks: its per-frame structures stay bounded (a fake clock).

A headless run (no window, no page, no status lines) never asks for a rate or a status line, so
nothing there may rely on being read to be pruned.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from streamer import live
from streamer.frames import Detections, Frame, Outcome
from streamer.live import INTERVAL_SAMPLES, CameraFeed, Rate
from streamer.stages import PassStage
from streamer.states import CaptureState

FPS = 25.0
IMAGE = np.zeros((2, 2, 3), np.uint8)
NO_BOXES = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32))


class Clock:
    """live's `time` module, with a monotonic clock the test moves."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class Capture:
    running = True
    state = CaptureState.LIVE
    reconnects = 0
    down_reason = None
    last_reason = None
    last_frame_time = None

    def stop(self):
        self.running = False


def test_a_rate_holds_only_its_window_however_many_ticks_and_whoever_reads_it():
    rate = Rate(window=2.0)
    most = 0
    for i in range(2_000_000):  # 22 hours at 25 fps
        rate.tick(i / FPS)
        most = max(most, len(rate))
    assert most <= 2.0 * FPS + 1
    assert rate.per_second(2_000_000 / FPS) == FPS
    burst = Rate(window=2.0, max_events=100)
    for i in range(10_000):  # a burst at one instant: the window is capped
        burst.tick(5.0)
    assert len(burst) == 100


def test_a_headless_camera_keeps_every_per_frame_structure_bounded(monkeypatch):
    """100,000 frames (1.1 hours at 25 fps; fifty times the largest bound) shown and answered,
    never a status line, HUD or view."""
    clock = Clock()
    monkeypatch.setattr(live, "time", clock)
    feed = CameraFeed(name="cam", capture=Capture(), stages=PassStage())
    sizes = {"rates": 0, "interval ages": 0, "interval result ages": 0, "ages": 0}
    for i in range(100_000):
        clock.now += 1 / FPS
        frame = Frame(index=i, pts=i, time_base=Fraction(1, 25), wall_time=clock.now, image=IMAGE)
        feed.emit(frame)
        feed.show_waiting()
        if i % 5 == 0:  # an answer every fifth frame
            taken = feed.slot.get(timeout=0)
            feed.deliver(Outcome(taken, NO_BOXES, latency=0.1))
            feed.collect()
        if i % 10_000 == 0:
            sizes["rates"] = max(sizes["rates"], len(feed._display_rate), len(feed._capture_rate),
                                 len(feed._result_rate))
            sizes["interval ages"] = max(sizes["interval ages"], len(feed._interval.ages))
            sizes["interval result ages"] = max(sizes["interval result ages"], len(feed._interval.result_ages))
            sizes["ages"] = max(sizes["ages"], len(feed.stats.ages))
    assert feed.stats.shown == 100_000 and feed.stats.inferred == 20_000
    assert sizes["rates"] <= 2 * FPS + 1, sizes
    assert sizes["interval ages"] <= INTERVAL_SAMPLES and sizes["interval result ages"] <= INTERVAL_SAMPLES, sizes
    assert sizes["ages"] <= live.RECENT, sizes
    # what the HUD and a status line say is still right after all that
    assert abs(feed.view(clock.now, live.InferenceState.ONLINE).figures["display_fps"] - FPS) <= 0.5
    line = feed.status(clock.now, 1.0, live.InferenceState.ONLINE)
    assert "frame age p50 0 ms" in line and "detections 0 ms old on arrival" in line
