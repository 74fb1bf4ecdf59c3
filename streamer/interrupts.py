"""Ctrl-C and SIGTERM as KeyboardInterrupt, held back while a frame is being written.

A KeyboardInterrupt raised between encoding a frame and muxing its packets loses those
packets: the mp4 then misses a frame and the frames that reference it decode as garbage.
Inside `critical()` a signal is only noted, and raised when the block ends, so every
frame is written whole or not at all, and a file being finished stays finished.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_depth = 0
_pending = False


def _handle(signum, frame) -> None:
    global _pending
    if _depth:
        _pending = True
    else:
        raise KeyboardInterrupt


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt (outside critical blocks) while active."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = {sig: signal.signal(sig, _handle) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """Hold Ctrl-C / SIGTERM until the block is done; then raise KeyboardInterrupt."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending:
            _pending = False
            raise KeyboardInterrupt
