"""InferenceStream's explicit phases (filling, draining, reconnecting, done) and its `state`, driven
step by step by the scripted peer; InferenceStream and ServerPool as the one `stages.Inference`
interface (state, servers, moved, close) over fake tritonclient clients."""

from __future__ import annotations

import threading

import pytest

from streamer.stages import Inference, ServerShare
from streamer.states import InferenceState
from streamer.triton import Phase, ServerPool, Target, TritonClient

from ..helpers import wait_until
from . import test_reorder
from .test_reorder import WAIT, FakeGrpcClient, check_answer, make_frames, run_in_thread, scripted_stream  # noqa: F401

make_stream = test_reorder.make_stream  # the fixture: a stream over a fake gRPC client

pytestmark = pytest.mark.timeout(60)


def test_phases_of_a_stream_that_breaks_and_comes_back(monkeypatch):
    ready = threading.Event()
    fake, stream = scripted_stream(monkeypatch, True, max_in_flight=2, retry_timeout=WAIT)
    monkeypatch.setattr(stream.client, "ready", ready.is_set)
    assert stream.phase is Phase.NEW
    thread, outcomes, errors = run_in_thread(stream, make_frames(3))

    fake.wait_requests(1, 2)
    wait_until(lambda: stream.phase is Phase.DRAINING, WAIT, 0.01, "a full window waiting for answers")
    assert stream.state is InferenceState.ONLINE
    fake.ok(1, 0)
    fake.wait_requests(1, 3)  # frame 0's answer made room for frame 2
    fake.breaks(1)
    wait_until(lambda: stream.phase is Phase.RECONNECTING, WAIT, 0.01, "reconnecting")
    assert stream.state is InferenceState.OFFLINE
    assert [o.frame.index for o in outcomes] == [0], "what was answered before the break is released"
    ready.set()  # the server is back: frames 1 and 2 are resent on a new stream
    fake.wait_requests(2, 2)
    assert sorted(int(r) for g, r in fake.requests if g == 2) == [1, 2]
    fake.ok(2, 2)
    fake.ok(2, 1)
    thread.join(WAIT)
    assert not thread.is_alive() and not errors
    assert stream.phase is Phase.DONE and stream.state is InferenceState.ONLINE
    assert [o.frame.index for o in outcomes] == [0, 1, 2]
    for k, outcome in enumerate(outcomes):
        check_answer(outcome, k)
    assert stream.reconnects == 1 and stream.resent == 2


def test_abort_ends_a_live_stream_waiting_for_its_server(monkeypatch):
    fake, stream = scripted_stream(monkeypatch, False, max_in_flight=1, retry_timeout=float("inf"), resend=False)
    thread, outcomes, errors = run_in_thread(stream, make_frames(5))
    fake.wait_requests(1, 1)
    fake.breaks(1)
    wait_until(lambda: stream.phase is Phase.RECONNECTING and outcomes, WAIT, 0.01, "the lost frame released")
    assert stream.state is InferenceState.OFFLINE
    assert [(o.frame.index, o.unavailable) for o in outcomes] == [(0, True)]
    stream.abort()
    thread.join(WAIT)
    assert not thread.is_alive() and not errors
    assert stream.phase is Phase.DONE


def test_a_stream_is_an_inference_with_one_server(make_stream):
    stream, _, _ = make_stream(3, lambda g, r: "error" if int(r) in (2, 5) else "ok")
    assert isinstance(stream, Inference)
    outcomes = list(stream.process(make_frames(8)))
    assert sum(o.ok for o in outcomes) == 6
    assert stream.servers() == [ServerShare("127.0.0.1:1", 6)], "frames answered with detections"
    assert stream.moved == 0
    stream.close()  # nothing to release: the client stays usable
    assert [o.ok for o in stream.process(make_frames(2))] == [True, True]


def test_a_pool_is_an_inference_over_its_servers(monkeypatch):
    fakes = []

    def make_client(url: str) -> TritonClient:
        fake = FakeGrpcClient(2, seed=len(fakes))
        fakes.append(fake)
        client = TritonClient(url, raw=fake)
        monkeypatch.setattr(client, "check", lambda: None)
        monkeypatch.setattr(client, "ready", lambda: True)
        return client

    pool = ServerPool([Target("a", 1), Target("b", 2)], make_client, max_in_flight=2, log=lambda m: None)
    assert isinstance(pool, Inference)
    try:
        outcomes = list(pool.process(make_frames(30)))
        assert [o.frame.index for o in outcomes] == list(range(30))
        for k, outcome in enumerate(outcomes):
            check_answer(outcome, k)
        shares = pool.servers()
        assert [s.url for s in shares] == ["a:1", "b:2"] and sum(s.frames for s in shares) == 30
        assert pool.moved == 0 and pool.state is InferenceState.ONLINE
    finally:
        pool.close()
        for fake in fakes:
            fake.close()
