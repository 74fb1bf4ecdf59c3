"""A camera's first connection follows the reconnect rules: one not reachable yet is retried
(reported once when it fails, once when it comes up, once if it is given up); one with an error
retrying cannot fix is given up at once, without a storm of attempts. Driven through
`LiveCapture` with scripted readers (the real readers' errors are mapped in `capture.py`)."""

from __future__ import annotations

from typing import List

import numpy as np
import pytest

from streamer.capture import CaptureSettings, LiveCapture, WebcamReader
from streamer.errors import FinalSourceError, SourceError
from streamer.sources import SourceSpec
from streamer.states import CaptureState, SourceKind

from ..helpers import wait_until

FAST = CaptureSettings(max_reconnect_time=30.0, backoff_initial=0.02, backoff_max=0.05)


class ScriptedReader:
    """Each open() takes the next outcome: an exception to raise, or None (it opens)."""

    finite = False

    def __init__(self, outcomes: list, frames_per_session: int = 5):
        self.outcomes = list(outcomes)
        self.frames_per_session = frames_per_session
        self.opens = 0
        self.rate = None
        self.size = None

    def open(self) -> None:
        self.opens += 1
        outcome = self.outcomes.pop(0) if self.outcomes else self.outcomes_left()
        if outcome is not None:
            raise outcome

    def outcomes_left(self):
        return None

    def images(self):
        for _ in range(self.frames_per_session):
            yield np.zeros((4, 4, 3), np.uint8)

    def close(self) -> None:
        pass


class AlwaysRefused(ScriptedReader):
    def outcomes_left(self):
        return SourceError("cam: connection refused; is it running?", reason="connection refused")


def capture(reader, settings: CaptureSettings = FAST, log: List[str] = None) -> LiveCapture:
    spec = SourceSpec(SourceKind.NETWORK, "rtsp://u:pw@h/x", "rtsp://***@h/x")
    return LiveCapture(spec, reader, settings, log=(log if log is not None else []).append, seed=0)


def refused() -> SourceError:
    return SourceError("rtsp://***@h/x: connection refused; is it running?", reason="connection refused")


def test_a_camera_not_up_yet_is_retried_and_its_first_frames_flow_when_it_comes():
    log: List[str] = []
    frames: list = []
    reader = ScriptedReader([refused(), refused(), refused(), None])
    cap = capture(reader, log=log)
    assert cap.connect() is False
    assert cap.state is CaptureState.CONNECTING and cap.last_reason == "connection refused"
    assert cap.down_reason.startswith("OFFLINE: connection refused, retrying")
    cap.start(frames.append, connect=True)
    wait_until(lambda: len(frames) >= 10, 30, what="two sessions' frames")
    cap.stop()
    cap.join(timeout=10)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert reader.opens >= 5 and cap.connected_once
    said = "\n".join(log)
    assert said.count("is not reachable yet") == 1 and said.count("is up") == 1  # once each, not per attempt
    # its first session ended later: that is a drop, and the next connection a reconnect
    assert "dropped" in said and "is back (reconnect 1)" in said and cap.reconnects >= 1


def test_an_error_retrying_cannot_fix_gives_the_camera_up_at_once():
    reader = ScriptedReader([FinalSourceError("cam: refused access (401 Unauthorized)",
                                              reason="wrong user or password (401)")])
    cap = capture(reader)
    with pytest.raises(FinalSourceError):
        cap.connect()
    assert cap.state is CaptureState.FAILED and cap.down_reason == "given up: wrong user or password (401)"
    cap.start(lambda frame: None, connect=True)
    assert not cap.running and reader.opens == 1  # never tried again


def test_a_final_error_while_retrying_ends_the_retries():
    log: List[str] = []
    reader = ScriptedReader([refused(), refused(), FinalSourceError("cam: no stream at this path (404)",
                                                                    reason="no stream at this path (404)")])
    cap = capture(reader, log=log)
    assert cap.connect() is False
    cap.start(lambda frame: None, connect=True)
    wait_until(lambda: not cap.running, 30, what="the capture to give up")
    assert cap.state is CaptureState.FAILED and reader.opens == 3
    assert isinstance(cap.error, FinalSourceError) and "giving up" in log[-1]


def test_a_camera_that_never_comes_up_is_given_up_after_max_reconnect_time():
    log: List[str] = []
    reader = AlwaysRefused([])
    cap = capture(reader, CaptureSettings(max_reconnect_time=0.5, backoff_initial=0.05, backoff_max=0.1), log)
    assert cap.connect() is False
    cap.start(lambda frame: None, connect=True)
    wait_until(lambda: not cap.running, 30, what="the capture to give up")
    assert cap.state is CaptureState.FAILED and not cap.connected_once and cap.reconnects == 0
    assert str(cap.error) == ("rtsp://***@h/x did not come up within 0 s (--max-reconnect-time); "
                              "last error: connection refused")
    assert cap.down_reason == "given up: not reachable for 0 s (connection refused)"
    assert 3 <= reader.opens < 30  # retried with backoff, not in a tight loop
    assert "\n".join(log).count("is not reachable yet") == 1


def test_stop_ends_the_wait_for_a_camera_not_up_yet():
    cap = capture(AlwaysRefused([]), CaptureSettings(max_reconnect_time=600, backoff_initial=5, backoff_max=5))
    assert cap.connect() is False
    cap.start(lambda frame: None, connect=True)
    cap.stop()
    wait_until(lambda: not cap.running, 5, what="the capture to stop")
    assert cap.state is CaptureState.STOPPED


class Device:
    def __init__(self, ok: bool):
        self.ok = ok

    def isOpened(self):
        return self.ok

    def release(self):
        pass

    def set(self, *args):
        return True

    def get(self, *args):
        return 0.0


def test_a_webcam_never_opened_is_final_one_unplugged_after_working_is_retried():
    devices = [Device(False)]
    spec = SourceSpec(SourceKind.WEBCAM, "7", "webcam 7")
    reader = WebcamReader(spec, FAST, opener=lambda target: devices.pop(0))
    with pytest.raises(FinalSourceError):
        reader.open()  # no such camera: said at once
    devices[:] = [Device(True), Device(False)]
    reader.open()
    reader.close()
    with pytest.raises(SourceError) as err:
        reader.open()  # it worked before: unplugged, waited for
    assert not isinstance(err.value, FinalSourceError)
