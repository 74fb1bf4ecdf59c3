"""Frame ages are measured when a frame is shown: never negative, even when a display step is slow
and frames keep arriving while it runs (status lines once printed `frame age p50 -1253 ms` under
overload: the step's clock was read once, before the frames captured during it were shown)."""

from __future__ import annotations

import re
import threading
import time
from fractions import Fraction

import numpy as np

from streamer.frames import Frame
from streamer.live import CameraFeed
from streamer.stages import PassStage
from streamer.states import CaptureState, InferenceState


class Capture:
    running = True
    state = CaptureState.LIVE
    reconnects = 0
    last_frame_time = None
    offline_for = 0.0
    down_reason = None
    last_reason = None

    def stop(self):
        self.running = False


class SlowRecorder:
    """A recording sink that takes 20 ms a frame (an encoder on a starved CPU)."""

    every_frame = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def write(self, frame, image, detections):
        time.sleep(0.02)


def test_no_negative_age_when_frames_arrive_during_a_slow_step():
    feed = CameraFeed("cam", Capture(), stages=PassStage(), sinks=[SlowRecorder()])
    stop = threading.Event()

    def camera():  # 200 fps: several frames are captured during every frame shown
        index = 0
        while not stop.is_set():
            feed.emit(Frame(index, index, Fraction(1, 200), time.monotonic(), np.zeros((8, 8, 3), np.uint8)))
            index += 1
            time.sleep(0.005)

    thread = threading.Thread(target=camera, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 1.5
        step_start = None
        while time.monotonic() < deadline:
            step_start = time.monotonic()  # the clock a step used to read once
            feed.show_waiting()
    finally:
        stop.set()
        thread.join(5)
    assert feed.stats.shown >= 20
    assert min(feed.stats.ages) >= 0, min(feed.stats.ages)
    line = feed.status(time.monotonic() + 11, 10, InferenceState.ONLINE)
    assert line is not None and not re.search(r"frame age p50 -|p95 -", line), line
    report = feed.stats.report("cam", {})
    assert 0 <= report.frame_age_ms["p50"] <= report.frame_age_ms["p95"]
    hud = feed.hud_lines(step_start)
    assert re.search(r"frame age \d+ ms", hud[2]), hud


def test_the_embedded_server_of_a_live_run_yields_the_cpu():
    """Live runs start the embedded server LIVE_NICENESS nicer (the picture comes before inference):
    the process the server's command becomes runs at that niceness."""
    import os
    import subprocess

    from streamer.runner import LIVE_NICENESS
    from streamer.server import child_setup

    out = subprocess.run(["cat", "/proc/self/stat"], capture_output=True, text=True,
                         preexec_fn=child_setup(LIVE_NICENESS), check=True).stdout
    nice = int(out.rsplit(")", 1)[1].split()[16])  # field 19 of proc(5): nice
    assert LIVE_NICENESS > 0 and nice == min(19, os.nice(0) + LIVE_NICENESS)
