"""Errors a user can cause or fix. Each carries the exit code the CLI returns.

The message is one line that names the cause and, where there is one, the fix.
"""

from __future__ import annotations

from typing import Optional

from .masking import scrub


class ExitCode:
    OK = 0
    INTERNAL = 1  # a bug: a traceback is printed
    USAGE = 2  # bad flags (click)
    SOURCE = 3  # input missing, unreadable, not a video
    INFERENCE = 4  # server unreachable, model missing or not matching the contract
    SINK = 5  # output cannot be written
    INCOMPLETE = 6  # the run finished but frames failed inference or the input ended early
    EXPORT = 7  # model export failed (weights unavailable, bad state dict)
    INTERRUPTED = 130  # Ctrl-C / SIGTERM


EXIT_CODES_HELP = """\b
Exit codes:
  0    success
  1    internal error (a bug: please report the traceback)
  2    bad command-line usage
  3    input problem (missing, empty, truncated, not a video; a detections log not for this video)
  4    inference problem (no server, model missing or not matching the contract), or an
       event output's server refused the run (MQTT: wrong user or password)
  5    output problem (folder missing, not writable, exists without --overwrite; the disk filled or the
       folder went away during the run: what was written is kept, see `streamer recover` and --resume)
  6    incomplete run (frames failed inference, or the input ended early)
  7    model export failed (weights unavailable or not matching the arch)
  130  interrupted (Ctrl-C / SIGTERM); what was processed is still written"""


class StreamerError(Exception):
    """Base class: one-line message, exit code. The message is masked here (`masking.scrub`):
    whatever URL an error names, no password reaches a log line, a report, the page or metrics."""

    exit_code = ExitCode.INTERNAL

    def __init__(self, message: str):
        message = scrub(message)
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class SourceError(StreamerError):
    """An input problem. A live camera's is worth retrying (refused, no answer, the stream broke)
    unless it is a `FinalSourceError`. `reason`: the cause in a few words, for a camera's tile and
    status (the message says more, and how to fix it)."""

    exit_code = ExitCode.SOURCE

    def __init__(self, message: str, reason: Optional[str] = None):
        super().__init__(message)
        self.reason = scrub(reason) if reason else self.message


class FinalSourceError(SourceError):
    """A source problem retrying cannot fix (wrong password, no stream at that path, a missing
    file, no video track, no decoder): a live camera with it is given up at once."""


class InferenceError(StreamerError):
    exit_code = ExitCode.INFERENCE


class ServerUnavailable(InferenceError):
    """No server answers at the address, or it went away and did not come back."""


class ModelNotReady(InferenceError):
    """The server answers but does not serve the model."""


class ModelMismatch(InferenceError):
    """The served model's inputs/outputs differ from the contract."""


class EventOutputError(StreamerError):
    """An event output's server refused the run at start (an MQTT broker that rejects the
    credentials): retrying cannot fix it. Exit 4, as a Triton server that cannot serve."""

    exit_code = ExitCode.INFERENCE


class SinkError(StreamerError):
    exit_code = ExitCode.SINK


class ExportError(StreamerError):
    exit_code = ExitCode.EXPORT


class ServerStartError(StreamerError):
    """The embedded tritonserver could not be started."""

    exit_code = ExitCode.INFERENCE


class PortInUse(ServerStartError):
    """A port the embedded server should bind is taken."""
