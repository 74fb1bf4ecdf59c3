"""streamer.triton.errors: each kind of tritonclient (and gRPC) error becomes its typed exception in
one place, `translate`; the client raises those types, and nothing outside reads error text.

The errors are built as tritonclient builds them (InferenceServerException with the status
string of grpc's StatusCode, or none for an answer's per-request error), with the words
Triton 2.51 uses; the gRPC error is a real one from a connection refused on a free port.
"""

from __future__ import annotations

import socket
from typing import List

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from streamer.errors import ExitCode, InferenceError, ModelNotReady, ServerUnavailable
from streamer.states import Transport
from streamer.triton import (ModelNotServed, RegionAlreadyRegistered, RegionInUse, RequestFailed, ServerUnreachable,
                             ShmRefused, ShmUnavailable, StreamBroken, TritonClient, TritonFailure)
from streamer.triton.errors import Call, mapped, translate
from streamer.triton.shm import RegionError

pytestmark = pytest.mark.timeout(60)


def ise(msg: str, status=None) -> InferenceServerException:
    return InferenceServerException(msg=msg, status=status)


UNAVAILABLE = "StatusCode.UNAVAILABLE"


@pytest.mark.parametrize("error, call, kind", [
    # the stream's callback: a per-request error has no status; a failure of the stream has one
    (ise("boom"), Call.ANSWER, RequestFailed),
    (ise("Stream removed", UNAVAILABLE), Call.ANSWER, StreamBroken),
    (ise("Locally cancelled by application!", "StatusCode.CANCELLED"), Call.ANSWER, StreamBroken),
    # sending on a stream: whatever fails, the stream is unusable
    (ise("The stream is no longer in valid state, the error detail is reported through provided callback."),
     Call.SEND, StreamBroken),
    (ise("Stream removed", UNAVAILABLE), Call.SEND, StreamBroken),
    # unary calls: no answer, or an answer that is an error
    (ise("failed to connect to all addresses", UNAVAILABLE), Call.SERVER, ServerUnreachable),
    (ise("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED"), Call.SERVER, ServerUnreachable),
    (ise("Cancelled", "StatusCode.CANCELLED"), Call.SERVER, ServerUnreachable),
    (ise("unexpected shape for input 'input__0'", "StatusCode.INVALID_ARGUMENT"), Call.SERVER, RequestFailed),
    (ise("Request for unknown model: 'yolo' is not found", "StatusCode.NOT_FOUND"), Call.SERVER, RequestFailed),
    (ise("the model raised", "StatusCode.INTERNAL"), Call.SERVER, RequestFailed),
    # shared-memory calls
    (ise("Cannot unregister shared memory region 'r', it is currently in use.", "StatusCode.INTERNAL"),
     Call.SHM, RegionInUse),
    (ise("shared memory region 'r' already in manager", "StatusCode.ALREADY_EXISTS"), Call.SHM,
     RegionAlreadyRegistered),
    (ise("Unable to open shared memory region: '/r'", "StatusCode.INTERNAL"), Call.SHM, ShmRefused),
    (ise("shared memory support is disabled; start tritonserver with --allow-client-shm=true"), Call.SHM,
     ShmRefused),
    (ise("failed to connect to all addresses", UNAVAILABLE), Call.SHM, ServerUnreachable),
])
def test_each_tritonclient_error_kind_gets_its_type(error, call, kind):
    typed = translate(error, call)
    assert type(typed) is kind
    assert isinstance(typed, TritonFailure) and isinstance(typed, InferenceError)
    assert typed.exit_code == ExitCode.INFERENCE
    assert str(typed) == error.message(), "the message is the server's words, without the status"
    assert typed.status == error.status()


def test_what_each_type_also_is():
    # the server went away: callers that only know the public classes catch it as such
    assert issubclass(ServerUnreachable, ServerUnavailable) and issubclass(StreamBroken, ServerUnavailable)
    assert not issubclass(RequestFailed, ServerUnavailable)
    # a refused shared-memory call, and a host without room, are both "shared memory unavailable"
    for refused in (ShmRefused, RegionInUse, RegionAlreadyRegistered, RegionError):
        assert issubclass(refused, ShmUnavailable)
    assert not issubclass(ServerUnreachable, ShmUnavailable)
    assert issubclass(ModelNotServed, ModelNotReady)


def test_a_real_grpc_error_is_translated():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5)
    typed = translate(caught.value, Call.SERVER)
    assert type(typed) is ServerUnreachable and typed.status == UNAVAILABLE
    assert str(typed) == " ".join(caught.value.details().split())


def test_a_traceback_is_shortened_to_its_last_line():
    text = ("Traceback (most recent call last):\n  File \"model.py\", line 3, in execute\n"
            "    raise RuntimeError('bad frame')\nRuntimeError: bad frame\n")
    assert str(translate(ise(text), Call.ANSWER)) == "RuntimeError: bad frame"
    assert str(translate(ise("two\n  lines"), Call.SERVER)) == "two lines"


def test_mapped_raises_the_type_from_the_original():
    original = ise("Stream removed", UNAVAILABLE)
    with pytest.raises(StreamBroken) as caught:
        with mapped(Call.SEND):
            raise original
    assert caught.value.__cause__ is original
    with pytest.raises(ValueError):  # anything else passes through untouched
        with mapped(Call.SERVER):
            raise ValueError("not Triton's")


# -- the client raises the types -------------------------------------------------------------------


class Raw:
    """A scripted tritonclient client: each method raises what `fail` maps its name to."""

    def __init__(self, fail=None, ready=("fasterrcnn",)):
        self.fail = fail or {}
        self.ready_models = ready

    def _maybe_fail(self, name):
        if name in self.fail:
            raise self.fail[name]

    def is_server_live(self, **kw):
        self._maybe_fail("is_server_live")
        return True

    def is_server_ready(self, **kw):
        self._maybe_fail("is_server_ready")
        return True

    def is_model_ready(self, name, **kw):
        self._maybe_fail("is_model_ready")
        return name in self.ready_models

    def get_model_repository_index(self, **kw):
        return service_pb2.RepositoryIndexResponse(models=[
            service_pb2.RepositoryIndexResponse.ModelIndex(name="fasterrcnn", state="READY")])

    def get_inference_statistics(self, name, **kw):
        self._maybe_fail("get_inference_statistics")
        return service_pb2.ModelStatisticsResponse()

    def infer(self, *args, **kw):
        self._maybe_fail("infer")

    def start_stream(self, callback, **kw):
        self._maybe_fail("start_stream")
        self.callback = callback

    def async_stream_infer(self, *args, **kw):
        self._maybe_fail("async_stream_infer")

    def stop_stream(self, **kw):
        pass

    def close(self):
        pass


def test_no_server_is_server_unavailable_with_the_reason():
    client = TritonClient("127.0.0.1:1", raw=Raw({"is_server_live": ise("connection refused", UNAVAILABLE)}))
    with pytest.raises(ServerUnavailable, match=r"^no Triton server answers at 127.0.0.1:1 \(connection refused\); "
                                                "start one with `streamer serve`") as caught:
        client.check()
    assert isinstance(caught.value.__cause__, ServerUnreachable)
    client = TritonClient("127.0.0.1:1", raw=Raw({"is_server_ready": ise("connection refused", UNAVAILABLE)}))
    assert client.ready() is False
    assert client.compute_stats() == (0, 0.0) and client.batch_stats() == {}


def test_a_model_not_served_is_its_own_type():
    client = TritonClient("h:1", model="yolo", raw=Raw())
    with pytest.raises(ModelNotServed, match=r"does not serve a ready model 'yolo' \(models: fasterrcnn READY\); "
                                             "pick one of them with --model"):
        client.check()


def test_a_server_failing_mid_check_is_server_unavailable():
    client = TritonClient("h:1", raw=Raw({"is_model_ready": ise("internal error", "StatusCode.INTERNAL")}))
    with pytest.raises(ServerUnavailable, match=r"^Triton at h:1 failed to answer \(internal error\)$") as caught:
        client.check()
    assert not isinstance(caught.value, ModelNotReady)


@pytest.mark.parametrize("error, kind, message", [
    (ise("connection refused", UNAVAILABLE), ServerUnavailable,
     r"^Triton at h:1 failed during inference \(connection refused\)$"),
    (ise("bad input", "StatusCode.INVALID_ARGUMENT"), InferenceError, r"^inference failed on the server: bad input$"),
])
def test_infer_failures(error, kind, message):
    client = TritonClient("h:1", raw=Raw({"infer": error}))
    with pytest.raises(kind, match=message) as caught:
        client.infer(np.zeros((4, 4, 3), np.uint8))
    assert isinstance(caught.value.__cause__, TritonFailure)


def test_a_stream_session_hands_typed_errors_to_its_callback():
    raw = Raw()
    answers: List[tuple] = []
    session = TritonClient("h:1", raw=raw).open_stream(lambda reply, error: answers.append((reply, error)))
    raw.callback(result=None, error=ise("boom"))  # as tritonclient's stream thread calls it: keywords
    raw.callback(result=None, error=ise("Stream removed", UNAVAILABLE))
    assert [(reply, type(error), str(error)) for reply, error in answers] == [
        (None, RequestFailed, "boom"), (None, StreamBroken, "Stream removed")]
    raw.fail["async_stream_infer"] = ise("The stream is no longer in valid state")
    with pytest.raises(StreamBroken, match="no longer in valid state"):
        session.send(0, np.zeros((4, 4, 3), np.uint8), 0)
    session.close()


def test_the_client_takes_the_transport_enum():
    with pytest.raises(TypeError, match="streamer.states.Transport"):
        TritonClient("h:1", transport="grpc", raw=Raw())
    client = TritonClient("h:1", transport=Transport.AUTO, raw=Raw())
    assert client.transport is Transport.GRPC and f"{client.transport}" == "grpc"
