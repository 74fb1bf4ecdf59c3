"""InferenceStream with sources that sometimes have nothing to send (IDLE), and live streams
that lose their server: answers and failures are released at once, never held back."""

from __future__ import annotations

import threading
import time

import pytest

from streamer.states import InferenceState
from streamer.triton import IDLE

from . import test_reorder
from .test_reorder import WAIT, check_answer, make_frames

make_stream = test_reorder.make_stream  # the fixture: a stream over a fake gRPC client

pytestmark = pytest.mark.timeout(60)


def test_answers_are_released_while_the_source_is_idle(make_stream):
    stream, _, _ = make_stream(2)
    frames = make_frames(2)
    released, seen_before_next = [], []

    def source():
        yield frames[0]
        deadline = time.monotonic() + WAIT
        while not released and time.monotonic() < deadline:
            yield IDLE  # e.g. no camera has a new frame: frame 0's answer must not wait for one
        seen_before_next.append(list(released))
        yield frames[1]

    for outcome in stream.process(source()):
        check_answer(outcome, outcome.frame.index)
        released.append(outcome.frame.index)
    assert seen_before_next == [[0]]
    assert released == [0, 1]


def test_a_live_stream_releases_the_frames_it_lost_before_waiting_for_the_server(make_stream):
    def plan(generation, request_id):
        return "break" if int(request_id) == 3 else "ok"

    stream, _, _ = make_stream(2, plan, ready=False, resend=False, retry_timeout=float("inf"))
    outcomes = []
    done = threading.Event()

    def consume():
        for outcome in stream.process(make_frames(10)):
            outcomes.append(outcome)
        done.set()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not any(not o.ok for o in outcomes) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.state is InferenceState.OFFLINE and not done.is_set()  # still waiting for the server...
    failed = [o for o in outcomes if not o.ok]
    assert failed and all(o.unavailable and "server unavailable" in o.error for o in failed)  # ...yet released
    assert 3 in [o.frame.index for o in failed]
    stream.abort()
    thread.join(WAIT)
    assert done.is_set()
