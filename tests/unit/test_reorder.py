"""streamer.triton.stream: ReorderBuffer, and InferenceStream.process() against a fake gRPC client.

The fake stands in for tritonclient's InferenceServerClient (given to TritonClient as its
`raw` client). It answers through the stream callback with keyword arguments, exactly like
tritonclient's stream thread, using real InferResult objects built from protobuf, and it
answers out of order. Frame k's answer encodes k in its boxes and labels, so a frame
given another frame's answer is caught.
"""

from __future__ import annotations

import random
import threading
from fractions import Fraction
from typing import Callable, Dict, List, Optional

import numpy as np
import pytest
from tritonclient.grpc import InferResult, service_pb2
from tritonclient.utils import InferenceServerException

from streamer.frames import Frame
from streamer.stages import Inference
from streamer.triton import InferenceStream, ReorderBuffer, TritonClient

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # generous bound for any wait on another thread


# -- ReorderBuffer -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_reorder_buffer_random_permutations(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    # Keys in registration order; not necessarily contiguous or sorted.
    keys = rng.sample(range(1000), n)
    buf = ReorderBuffer()
    for k in keys:
        buf.expect(k)
    assert len(buf) == n
    completion = keys[:]
    rng.shuffle(completion)
    done = set()
    released: List[str] = []
    for k in completion:
        assert not buf.has(k)
        buf.put(k, f"item{k}")
        assert buf.has(k)
        done.add(k)
        released.extend(buf.ready())
        # Released = the longest prefix of the registration order whose keys are all done.
        prefix = 0
        while prefix < n and keys[prefix] in done:
            prefix += 1
        assert released == [f"item{k2}" for k2 in keys[:prefix]], "released early or out of order"
        assert len(buf) == n - prefix
    assert released == [f"item{k}" for k in keys]
    assert len(buf) == 0
    assert list(buf.ready()) == []


def test_reorder_buffer_waits_for_earliest_key():
    buf = ReorderBuffer()
    for k in range(3):
        buf.expect(k)
    buf.put(2, "c")
    buf.put(1, "b")
    assert list(buf.ready()) == []
    assert len(buf) == 3
    buf.put(0, "a")
    assert list(buf.ready()) == ["a", "b", "c"]
    assert len(buf) == 0


def test_reorder_buffer_releases_incrementally():
    buf = ReorderBuffer()
    buf.expect(0)
    buf.put(0, "a")
    assert list(buf.ready()) == ["a"]
    buf.expect(1)
    buf.expect(2)
    buf.put(2, "c")
    assert list(buf.ready()) == []
    assert len(buf) == 2


# -- a fake tritonclient gRPC client ------------------------------------------------------------


def answer_for(index: int) -> Dict[str, np.ndarray]:
    """Frame `index`'s detections: index % 4 boxes (0 included), every value derived from index."""
    n = index % 4
    boxes = np.array([[index, j, index + 0.5, j + 1] for j in range(n)], np.float32).reshape(n, 4)
    labels = np.array([index * 10 + j for j in range(n)], np.int64)
    scores = np.array([0.5 + j / 10 for j in range(n)], np.float32)
    return {"boxes": boxes, "labels": labels, "scores": scores}


def infer_result(request_id: str) -> InferResult:
    """A real tritonclient InferResult, laid out as a Triton server sends it."""
    a = answer_for(int(request_id))
    tensors = [("output__0", "FP32", a["boxes"]), ("output__1", "INT64", a["labels"]),
               ("output__2", "FP32", a["scores"])]
    response = service_pb2.ModelInferResponse(
        model_name="fasterrcnn",
        id=request_id,
        outputs=[service_pb2.ModelInferResponse.InferOutputTensor(name=name, datatype=dt, shape=list(arr.shape))
                 for name, dt, arr in tensors],
        raw_output_contents=[arr.tobytes() for _, _, arr in tensors],
    )
    return InferResult(response)


def check_answer(outcome, index: int) -> None:
    a = answer_for(index)
    assert outcome.ok, f"frame {index} failed: {outcome.error}"
    assert outcome.error is None
    np.testing.assert_array_equal(outcome.detections.boxes, a["boxes"])
    np.testing.assert_array_equal(outcome.detections.labels, a["labels"])
    np.testing.assert_array_equal(outcome.detections.scores, a["scores"])


class FakeStream:
    def __init__(self, generation: int, callback):
        self.generation = generation
        self.callback = callback
        self.active = True  # False once broken (as tritonclient's _active)
        self.stopped = False


# What the fake does with a request: "ok", "error" (per-request error), "break" (the
# stream fails; the error comes through the callback), "raise" (the stream fails and
# async_stream_infer raises).
Plan = Callable[[int, str], str]


def always_ok(generation: int, request_id: str) -> str:
    return "ok"


class FakeGrpcClient:
    """Holds answers and releases each batch shuffled from its own thread: a batch goes out
    when `window` answers are held, or when nothing new arrived for a short while (so a
    caller that stops sending is still answered)."""

    def __init__(self, window: int, plan: Plan = always_ok, seed: int = 0, quiet: float = 0.03):
        self.window = window
        self.plan = plan
        self.quiet = quiet
        self.rng = random.Random(seed)
        self.cond = threading.Condition()
        self.stream: Optional[FakeStream] = None
        self.generation = 0
        self.held: List[tuple] = []  # (stream, kind, payload)
        self.requests: List[tuple] = []  # (generation, request_id) as received
        self.delivered: List[tuple] = []  # (generation, request_id, kind) in delivery order
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    # -- the InferenceServerClient surface InferenceStream uses --
    def start_stream(self, callback, **kwargs):
        with self.cond:
            if self.stream is not None:
                raise InferenceServerException(msg="cannot start another stream with one already running")
            self.generation += 1
            self.stream = FakeStream(self.generation, callback)

    def stop_stream(self, cancel_requests=False):
        with self.cond:
            stream, self.stream = self.stream, None
            if stream is None:
                return
            stream.stopped = True
            self.held = [h for h in self.held if h[0] is not stream]
            if cancel_requests and stream.active:
                # tritonclient reports the cancelled response iterator through the callback.
                stream.active = False
                self.held.append((stream, "cancelled", None))
                self.cond.notify_all()

    def async_stream_infer(self, model_name, inputs, outputs=None, request_id="", **kwargs):
        assert model_name == "fasterrcnn"
        assert [i.name() for i in inputs] == ["input__0"]
        assert [o.name() for o in outputs] == ["output__0", "output__1", "output__2"]
        with self.cond:
            stream = self.stream
            if stream is None:
                raise InferenceServerException(msg="stream not available, use start_stream() to make one available.")
            if not stream.active:
                raise InferenceServerException(msg="The stream is no longer in valid state")
            self.requests.append((stream.generation, request_id))
            kind = self.plan(stream.generation, request_id)
            if kind == "raise":
                stream.active = False
                self.held = [h for h in self.held if h[0] is not stream]
                raise InferenceServerException(msg="Stream removed", status="StatusCode.UNAVAILABLE")
            if kind == "break":
                stream.active = False
                self.held = [h for h in self.held if h[0] is not stream]
                self.held.append((stream, "break", None))
            else:
                self.held.append((stream, kind, request_id))
            self.cond.notify_all()

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.thread.join(WAIT)

    # -- the answering thread --
    def _run(self):
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.closed or len(self.held) >= self.window, timeout=self.quiet)
                if self.closed:
                    return
                batch, self.held = self.held, []
            # Failures of the stream itself come after the answers already on their way.
            answers = [h for h in batch if h[1] in ("ok", "error")]
            others = [h for h in batch if h[1] not in ("ok", "error")]
            self.rng.shuffle(answers)
            for stream, kind, request_id in answers + others:
                with self.cond:
                    if stream.stopped and kind in ("ok", "error"):
                        continue  # a stopped stream answers nothing more
                    self.delivered.append((stream.generation, request_id, kind))
                if kind == "ok":
                    stream.callback(result=infer_result(request_id), error=None)
                elif kind == "error":
                    stream.callback(result=None, error=InferenceServerException(msg="boom"))
                elif kind == "break":
                    stream.callback(result=None, error=InferenceServerException(
                        msg="Stream removed", status="StatusCode.UNAVAILABLE"))
                elif kind == "cancelled":
                    stream.callback(result=None, error=InferenceServerException(
                        msg="Locally cancelled by application!", status="StatusCode.CANCELLED"))


def make_frames(n: int):
    image = np.zeros((6, 8, 3), np.uint8)
    return [Frame(index=i, pts=i, time_base=Fraction(1, 30), wall_time=0.0, image=image) for i in range(n)]


@pytest.fixture
def make_stream(monkeypatch):
    fakes: List[FakeGrpcClient] = []

    def make(window: int, plan: Plan = always_ok, seed: int = 0, ready: bool = True, fake=None, **kwargs):
        fake = fake or FakeGrpcClient(window, plan, seed)
        fakes.append(fake)
        client = TritonClient("127.0.0.1:1", raw=fake)
        monkeypatch.setattr(client, "ready", lambda: ready)
        logs: List[str] = []
        stream = InferenceStream(client, max_in_flight=window, request_timeout=WAIT, log=logs.append, **kwargs)
        return stream, fake, logs

    yield make
    for fake in fakes:
        fake.close()


def ok_ids(fake: FakeGrpcClient) -> List[int]:
    return [int(rid) for _, rid, kind in fake.delivered if kind == "ok"]


# -- InferenceStream.process ----------------------------------------------------------------


@pytest.mark.parametrize("window,seed", [(1, 0), (3, 1), (4, 2), (8, 3)])
def test_process_yields_in_frame_order_with_each_frames_answer(make_stream, window, seed):
    n = 40
    stream, fake, _ = make_stream(window, seed=seed)
    outcomes = list(stream.process(make_frames(n)))
    assert [o.frame.index for o in outcomes] == list(range(n))
    for k, outcome in enumerate(outcomes):
        check_answer(outcome, k)
        assert outcome.latency is not None and outcome.latency >= 0
    assert sorted(int(r) for _, r in fake.requests) == list(range(n)), "each frame sent exactly once"
    assert {g for g, _ in fake.requests} == {1}
    if window > 1:
        assert ok_ids(fake) != sorted(ok_ids(fake)), "the fake should have answered out of order"
    assert stream.reconnects == 0
    assert fake.stream is None, "process() stops its stream when done"


def test_process_never_exceeds_the_window(make_stream):
    window = 3
    in_flight_max = []

    class Counting(FakeGrpcClient):
        def async_stream_infer(self, *args, **kwargs):
            super().async_stream_infer(*args, **kwargs)
            with self.cond:
                answered = sum(1 for _, _, kind in self.delivered if kind in ("ok", "error"))
                in_flight_max.append(len(self.requests) - answered)

    counting = Counting(window)
    stream, fake, _ = make_stream(window, fake=counting)
    try:
        outcomes = list(stream.process(make_frames(20)))
    finally:
        counting.close()
    assert [o.frame.index for o in outcomes] == list(range(20))
    assert max(in_flight_max) <= window


def test_process_empty_input(make_stream):
    stream, fake, _ = make_stream(2)
    assert list(stream.process([])) == []
    assert fake.requests == []


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_per_request_errors_are_tied_to_their_frames(make_stream, seed):
    n = 30
    failing = {2, 3, 7, 11, 12, 19, 29}

    def plan(generation, request_id):
        return "error" if int(request_id) in failing else "ok"

    stream, fake, _ = make_stream(4, plan, seed=seed)
    outcomes = list(stream.process(make_frames(n)))
    assert [o.frame.index for o in outcomes] == list(range(n)), "in order, none missing, none repeated"
    for k, outcome in enumerate(outcomes):
        if k in failing:
            assert not outcome.ok, f"frame {k} should have failed"
            assert outcome.detections is None
            assert "boom" in outcome.error
        else:
            check_answer(outcome, k)
    assert stream.reconnects == 0


def test_every_request_failing(make_stream):
    stream, _, _ = make_stream(3, lambda g, r: "error", seed=5)
    outcomes = list(stream.process(make_frames(10)))
    assert [o.frame.index for o in outcomes] == list(range(10))
    assert all(not o.ok and "boom" in o.error for o in outcomes)


@pytest.mark.parametrize("mode", ["break", "raise"])
@pytest.mark.parametrize("seed", [0, 1])
def test_transport_error_reconnects_and_resends(make_stream, mode, seed):
    n = 24
    broke = []

    def plan(generation, request_id):
        if generation == 1 and int(request_id) == 9 and not broke:
            broke.append(request_id)
            return mode
        return "ok"

    stream, fake, logs = make_stream(4, plan, seed=seed)
    outcomes = list(stream.process(make_frames(n)))
    assert broke, "the fake never broke the stream"
    assert [o.frame.index for o in outcomes] == list(range(n)), "every frame exactly once, in order"
    for k, outcome in enumerate(outcomes):
        check_answer(outcome, k)
    assert stream.reconnects == 1
    assert stream.resent >= 1
    assert fake.generation == 2, "one new stream after the failure"
    resent = [int(r) for g, r in fake.requests if g == 2 and int(r) <= 9]
    assert 9 in resent, "the request that broke the stream is sent again"
    assert any("unreachable" in line for line in logs)


@pytest.mark.parametrize("mode", ["break", "raise"])
def test_transport_error_gives_up_when_server_stays_away(make_stream, mode):
    n = 20
    broken_at = 8

    def plan(generation, request_id):
        return mode if int(request_id) == broken_at else "ok"

    stream, fake, logs = make_stream(4, plan, seed=7, ready=False, retry_timeout=0.5)
    outcomes = list(stream.process(make_frames(n)))
    assert [o.frame.index for o in outcomes] == list(range(n)), "every frame exactly once, in order"
    answered = set(ok_ids(fake))
    for k, outcome in enumerate(outcomes):
        if outcome.ok:
            assert k in answered, f"frame {k} came out ok without an answer"
            check_answer(outcome, k)
        else:
            assert outcome.detections is None
            assert outcome.error == "server unavailable"
    assert outcomes[0].ok, "frames answered long before the failure are kept"
    assert all(not o.ok for o in outcomes[broken_at:])
    assert stream.reconnects == 0
    assert fake.generation == 1, "no new stream while the server is not ready"
    assert max(int(r) for _, r in fake.requests) == broken_at, "nothing sent after giving up"
    assert any("did not come back" in line for line in logs)


# -- per-request errors meeting a transport error: driven step by step ---------------------------


class ScriptedClient:
    """A fake whose answers the test sends itself, in the order it chooses."""

    def __init__(self):
        self.cond = threading.Condition()
        self.streams: List[FakeStream] = []
        self.requests: List[tuple] = []

    def start_stream(self, callback, **kwargs):
        with self.cond:
            self.streams.append(FakeStream(len(self.streams) + 1, callback))
            self.cond.notify_all()

    def stop_stream(self, cancel_requests=False):
        with self.cond:
            if self.streams:
                self.streams[-1].stopped = True

    def async_stream_infer(self, model_name, inputs, outputs=None, request_id="", **kwargs):
        with self.cond:
            stream = self.streams[-1]
            if not stream.active or stream.stopped:
                raise InferenceServerException(msg="The stream is no longer in valid state")
            self.requests.append((stream.generation, request_id))
            self.cond.notify_all()

    def wait_requests(self, generation: int, count: int) -> None:
        with self.cond:
            ok = self.cond.wait_for(
                lambda: sum(1 for g, _ in self.requests if g == generation) >= count, timeout=WAIT)
        assert ok, f"expected {count} requests on stream {generation}, got {self.requests}"

    def ok(self, generation: int, index: int) -> None:
        self.streams[generation - 1].callback(result=infer_result(str(index)), error=None)

    def error(self, generation: int) -> None:
        self.streams[generation - 1].callback(result=None, error=InferenceServerException(msg="boom"))

    def breaks(self, generation: int) -> None:
        self.streams[generation - 1].active = False
        self.streams[generation - 1].callback(
            result=None, error=InferenceServerException(msg="Stream removed", status="StatusCode.UNAVAILABLE"))


def run_in_thread(stream: Inference, frames) -> tuple:
    """`stream.process(frames)` consumed in a thread: (thread, outcomes so far, errors)."""
    outcomes: list = []
    errors: list = []

    def consume():
        try:
            for outcome in stream.process(frames):
                outcomes.append(outcome)
        except BaseException as err:  # surfaced by the test
            errors.append(err)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    return thread, outcomes, errors


class SpinGuard(ReorderBuffer):
    """A ReorderBuffer that stops a generator spinning without progress (a hang)."""

    def ready(self):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls > 50_000:
            raise RuntimeError("process() spins without progress")
        return super().ready()


def scripted_stream(monkeypatch, server_ready: bool, **kwargs):
    """An InferenceStream over a ScriptedClient; the server's readiness is fixed."""
    fake = ScriptedClient()
    client = TritonClient("127.0.0.1:1", raw=fake)
    monkeypatch.setattr(client, "ready", lambda: server_ready)
    return fake, InferenceStream(client, request_timeout=WAIT, log=lambda m: None, **kwargs)


def test_request_error_then_reconnect_ties_errors_to_the_right_frames(monkeypatch):
    fake, stream = scripted_stream(monkeypatch, True, max_in_flight=4)
    thread, outcomes, errors = run_in_thread(stream, make_frames(4))

    fake.wait_requests(1, 4)
    fake.error(1)  # frame 1's per-request error (no id)
    fake.breaks(1)  # then the server goes away: the stream fails
    fake.wait_requests(2, 4)  # reconnected, all four resent
    fake.error(2)  # frame 1 fails again on the new stream
    fake.ok(2, 0)
    fake.ok(2, 2)
    fake.ok(2, 3)
    thread.join(WAIT)
    assert not thread.is_alive() and not errors
    assert [o.frame.index for o in outcomes] == [0, 1, 2, 3]
    assert [o.ok for o in outcomes] == [True, False, True, True]
    for k in (0, 2, 3):
        check_answer(outcomes[k], k)


def test_request_error_then_give_up_fails_remaining_frames(monkeypatch):
    monkeypatch.setattr("streamer.triton.stream.ReorderBuffer", SpinGuard)
    fake, stream = scripted_stream(monkeypatch, False, max_in_flight=2, retry_timeout=0.2)
    thread, outcomes, errors = run_in_thread(stream, make_frames(5))

    fake.wait_requests(1, 2)
    fake.error(1)  # one of frames 0/1 fails on the server
    fake.breaks(1)  # then the stream fails and the server never comes back
    thread.join(WAIT)
    assert not thread.is_alive()
    assert not errors, errors
    assert [o.frame.index for o in outcomes] == [0, 1, 2, 3, 4]
    assert all(not o.ok for o in outcomes)


def test_give_up_keeps_answers_received_before_the_failure(monkeypatch):
    fake, stream = scripted_stream(monkeypatch, False, max_in_flight=2, retry_timeout=0.5)
    thread, outcomes, errors = run_in_thread(stream, make_frames(3))

    fake.wait_requests(1, 2)
    # As tritonclient does when the server goes away: the answers that made it are
    # delivered, the stream turns inactive (a later send raises), then the error comes.
    fake.streams[0].active = False
    fake.ok(1, 0)
    fake.ok(1, 1)
    fake.breaks(1)
    thread.join(WAIT)
    assert not thread.is_alive() and not errors
    assert [o.frame.index for o in outcomes] == [0, 1, 2]
    check_answer(outcomes[0], 0)
    check_answer(outcomes[1], 1)
    assert not outcomes[2].ok and outcomes[2].error == "server unavailable"
