"""tritonclient's errors, and the errors this package raises."""

from __future__ import annotations

from tritonclient.utils import InferenceServerException

from ..errors import InferenceError

UNREACHABLE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED")


class ShmUnavailable(InferenceError):
    """--transport shm, and the host or server refuses system shared memory."""


def is_transport_error(error: InferenceServerException) -> bool:
    """On a stream: errors of one request come with only a message; a failure of the
    stream itself carries a gRPC status such as "StatusCode.UNAVAILABLE"."""
    return error.status() is not None


def squeeze(text: object, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def short(err: Exception) -> str:
    text = str(err.message() if isinstance(err, InferenceServerException) else err)
    if "Traceback" in text:  # a TorchScript/Python traceback: its last line says what happened
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = lines[-1] if lines else text
    return squeeze(text)

