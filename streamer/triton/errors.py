"""tritonclient's errors, as the typed exceptions the rest of streamer catches.

`translate(error, call)` is the one place that reads a tritonclient (or gRPC) error: its
status, and, where Triton says what happened only in words (a region "in use"), its text.
Everything else catches the types below; nothing else looks at an error's message.

    TritonFailure                       a call to Triton failed (message: the server's reason, one line)
    ├── ServerUnreachable               no answer: the server is down, gone or too slow (also a ServerUnavailable)
    ├── StreamBroken                    the stream itself failed: reopen it and resend (also a ServerUnavailable)
    ├── RequestFailed                   the server refused or failed one request; the stream stays open
    └── ShmRefused                      the server refused a shared-memory call (also a ShmUnavailable)
        ├── RegionInUse                 unregistering a region that queued requests still read
        └── RegionAlreadyRegistered     registering a name the server already knows

ShmUnavailable (shared memory cannot be used: the host or the server refuses it) and
ModelNotServed (the server does not serve a ready model of that name) are raised by this
package itself; they subclass the public classes of `streamer.errors`, so their exit codes
are those of InferenceError.
"""

from __future__ import annotations

import contextlib
from enum import Enum
from typing import Iterator, Optional

import grpc
from tritonclient.utils import InferenceServerException

from ..errors import InferenceError, ModelNotReady, ServerUnavailable


class Call(Enum):
    """What the failed call was: the same status means different things on each."""

    SERVER = "server"  # a unary call: health, model config, statistics, a single inference
    SHM = "shm"  # registering, unregistering or listing shared-memory regions
    SEND = "send"  # opening a stream or sending a request on it
    ANSWER = "answer"  # an error the stream's callback received


class TritonFailure(InferenceError):
    """A call to Triton failed. The message is the server's reason, shortened to one line;
    `status` is the gRPC status ("StatusCode.UNAVAILABLE"), None when the server gave none."""

    def __init__(self, message: str, status: Optional[str] = None):
        super().__init__(message)
        self.status = status


class ServerUnreachable(TritonFailure, ServerUnavailable):
    """No answer: the server is not there, went away, or did not answer in time."""


class StreamBroken(TritonFailure, ServerUnavailable):
    """The stream itself failed (a transport error): what was in flight is lost; open a new
    stream and resend it."""


class RequestFailed(TritonFailure):
    """The server refused or failed one request (the model raised, a bad input); the stream,
    if any, stays open."""


class ShmUnavailable(InferenceError):
    """Shared memory cannot be used: the host (no /dev/shm, full) or the server refuses it.
    Raised as the user's error under --transport shm; under auto the client falls back to gRPC."""


class ShmRefused(TritonFailure, ShmUnavailable):
    """The server refused a shared-memory call (disabled, cannot open the region...)."""


class RegionInUse(ShmRefused):
    """The server refuses to unregister a region while queued requests still read it."""


class RegionAlreadyRegistered(ShmRefused):
    """The server already knows a region of that name (the same server after a broken stream)."""


class ModelNotServed(ModelNotReady):
    """The server answers but serves no ready model of the name(s) asked for."""


UNREACHABLE = frozenset(("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED"))
ALREADY_EXISTS = "StatusCode.ALREADY_EXISTS"


def translate(error: BaseException, call: Call) -> TritonFailure:
    """The typed exception for a tritonclient or gRPC error raised by (or reported to) `call`."""
    if isinstance(error, grpc.Call):  # a gRPC error tritonclient let through (grpc.RpcError and grpc.Call)
        status, text = str(error.code()), error.details()
    elif isinstance(error, InferenceServerException):
        status, text = error.status(), error.message()
    else:
        status, text = None, str(error)
    reason = short(text)
    if call is Call.ANSWER:
        # A failure of one request comes with only a message; a failure of the stream itself
        # carries a gRPC status (UNAVAILABLE when the server went away, CANCELLED when stopped).
        return StreamBroken(reason, status) if status is not None else RequestFailed(reason, status)
    if call is Call.SEND:
        # Starting a stream, or sending on one that is no longer valid: the stream is unusable.
        return StreamBroken(reason, status)
    if status in UNREACHABLE:
        return ServerUnreachable(reason, status)
    if call is Call.SHM:
        words = str(text)
        if "in use" in words:  # Triton says this only in words (status INTERNAL)
            return RegionInUse(reason, status)
        if status == ALREADY_EXISTS or "already" in words:
            return RegionAlreadyRegistered(reason, status)
        return ShmRefused(reason, status)
    return RequestFailed(reason, status)


@contextlib.contextmanager
def mapped(call: Call) -> Iterator[None]:
    """Run a tritonclient call: its errors come out as `translate` types."""
    try:
        yield
    except (InferenceServerException, grpc.RpcError) as err:
        raise translate(err, call) from err


def squeeze(text: object, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def short(text: object) -> str:
    """A server's error text in one line: a TorchScript/Python traceback gives its last line."""
    text = str(text)
    if "Traceback" in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = lines[-1] if lines else text
    return squeeze(text)
