"""`InferenceStream.process(frames)`: frames over one gRPC stream, outcomes in frame order.

A bounded number in flight (request id = frame index). Per-request errors carry no
reliable id: when one arrives we stop sending until everything in flight has answered,
and the requests left without a result are the failed ones. A transport error (server
gone) ends the stream: we wait for the server (bounded), open a new stream and resend what
was in flight. A live run instead fails what was in flight (stale by then), waits as long
as it runs (`abort()` ends the wait), and its `state` tells the display whether inference
is online.
"""

from __future__ import annotations

import functools
import queue
import sys
import threading
import time
from collections import deque
from typing import Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

from tritonclient.utils import InferenceServerException

from ..frames import Frame, Outcome
from ..stages import ServerShare
from ..states import InferenceState
from .client import TritonClient
from .errors import is_transport_error as _is_transport_error
from .errors import short as _short

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


_ABORT = object()  # put on the event queue by abort()

# Yielded by a frame source that has nothing to send right now (a live scheduler whose
# cameras have no new frame, a server pool whose work is elsewhere): process() goes on
# releasing answers and asks again soon, instead of the source blocking with answers waiting.
IDLE = object()
IDLE_WAIT = 0.05  # seconds process() waits for answers before asking an idle source again

_UNREACHABLE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED")


class ReorderBuffer:
    """Releases items in the order their keys were registered, whatever order they complete in."""

    def __init__(self):
        self._order: Deque[int] = deque()
        self._done: Dict[int, object] = {}

    def expect(self, key: int) -> None:
        self._order.append(key)

    def put(self, key: int, item) -> None:
        self._done[key] = item

    def has(self, key: int) -> bool:
        return key in self._done

    def ready(self) -> Iterator:
        """Pop the completed items at the head of the order."""
        while self._order and self._order[0] in self._done:
            yield self._done.pop(self._order.popleft())

    def __len__(self) -> int:
        """Keys registered and not yet released."""
        return len(self._order)


class InferenceStream:
    """Ordered, lossless streaming inference of a sequence of frames.

    recover(deadline) is called after the stream broke; it may restart a server it owns.
    The stream then waits until the server is ready again, at most `retry_timeout` seconds.
    """

    def __init__(
        self,
        client: TritonClient,
        max_in_flight: int = 2,
        retry_timeout: float = 60.0,
        request_timeout: float = 300.0,
        recover: Optional[Callable[[], None]] = None,
        log: Log = _stderr,
        resend: bool = True,
    ):
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self.client = client
        self.max_in_flight = max_in_flight
        self.retry_timeout = retry_timeout
        self.request_timeout = request_timeout
        self.recover = recover
        self.log = log
        self.resend = resend
        self.state = InferenceState.ONLINE  # OFFLINE while waiting for the server
        self.reconnects = 0
        self.resent = 0
        self.answered = 0  # frames the server answered with detections
        self._aborted = threading.Event()
        self._events: "queue.Queue[Tuple[int, object, Optional[InferenceServerException]]]" = queue.Queue()
        self._generation = 0
        self._streaming = False
        self._server_gone = False
        self._in_flight: Dict[int, Tuple[Frame, float]] = {}
        self._last_answer = time.monotonic()  # or the last send into an empty window

    def compute_stats(self) -> Tuple[int, float]:
        """The server's (inferences, compute seconds) so far."""
        return self.client.compute_stats()

    moved = 0  # one server: nothing is moved

    def servers(self) -> List[ServerShare]:
        return [ServerShare(self.client.url, self.answered)]

    def close(self) -> None:
        """The session owns the client: nothing to release here."""

    def abort(self) -> None:
        """From another thread: make process() return soon, dropping what is in flight."""
        self._aborted.set()
        self._events.put((self._generation, _ABORT, None))

    # -- the gRPC stream ------------------------------------------------------------------
    def _on_response(self, generation: int, result=None, error=None) -> None:
        # Called on tritonclient's thread with keywords result=, error=. Only enqueue.
        self._events.put((generation, result, error))

    def _open(self) -> None:
        self._last_answer = time.monotonic()
        self._generation += 1
        self.client._client.start_stream(callback=functools.partial(self._on_response, self._generation))
        self._streaming = True

    def _close(self) -> None:
        if self._streaming:
            self._streaming = False
            try:
                self.client._client.stop_stream(cancel_requests=True)
            except Exception:  # the stream may already be broken
                pass

    def _send(self, frame: Frame) -> None:
        if not self._in_flight:
            self._last_answer = time.monotonic()  # the wait for an answer starts now
        self._in_flight[frame.index] = (frame, time.monotonic())
        self.client._client.async_stream_infer(
            self.client.model,
            self.client._inputs(frame.image, frame.index),
            outputs=self.client._outputs(),
            request_id=str(frame.index),
        )

    # -- recovery ---------------------------------------------------------------------------
    def _reconnect(self, reason: str) -> bool:
        """After a transport failure: wait for the server, reopen, resend. False: gave up."""
        self._close()
        self.state = InferenceState.OFFLINE
        pending = sorted(self._in_flight)
        if self.retry_timeout == float("inf"):
            self.log(f"Triton at {self.client.url} is unreachable ({reason}); waiting for it")
        else:
            self.log(
                f"Triton at {self.client.url} is unreachable ({reason}); waiting up to "
                f"{self.retry_timeout:.0f} s for it (--retry-timeout) to resend {len(pending)} frame(s) in flight"
            )
        deadline = time.monotonic() + self.retry_timeout
        while time.monotonic() < deadline and not self._aborted.is_set():
            if self.recover is not None:
                try:
                    self.recover()
                except Exception as err:  # the server we own failed to restart: keep trying
                    self.log(f"restarting the server failed: {err}")
            if self.client.ready():
                try:
                    self.client._restore_transport()  # a restarted server knows none of our regions
                    self._open()
                    for index in pending:
                        self._send(self._in_flight[index][0])
                except InferenceServerException:
                    self._close()
                    time.sleep(0.5)
                    continue
                self.reconnects += 1
                self.resent += len(pending)
                self.state = InferenceState.ONLINE
                self.log(f"Triton is back; resent {len(pending)} frame(s)" if pending else "Triton is back")
                return True
            self._aborted.wait(0.5)
        if self._aborted.is_set():
            return False
        self._server_gone = True
        self.log(f"Triton did not come back within {self.retry_timeout:.0f} s; remaining frames are written unannotated")
        return False

    def _fail_in_flight(self, results: ReorderBuffer, message: str, unavailable: bool = False) -> None:
        for index, (frame, sent) in self._in_flight.items():
            self.client._release(index)
            results.put(index, Outcome(frame, None, message, time.monotonic() - sent, unavailable))
        self._in_flight.clear()

    # -- the ordered generator --------------------------------------------------------------
    def process(self, frames: Iterable[Frame]) -> Iterator[Outcome]:
        source = iter(frames)
        results = ReorderBuffer()
        request_errors: List[str] = []  # per-request errors not yet tied to a frame
        exhausted = False
        lost: List[str] = []  # why the stream broke, until it is reopened

        def broken(reason: str) -> None:
            # Keep answers that arrived before the failure; everything still in flight is
            # then resent (or failed), so errors not yet tied to a frame no longer count.
            self._drain(results)
            request_errors.clear()
            if not self.resend:  # live: by the time the server is back, these frames are stale
                self._fail_in_flight(results, f"server unavailable ({reason})", unavailable=True)
            lost[:] = [reason]  # reconnect once what is settled has been released

        self._open()
        try:
            while True:
                # 1. keep the window full, unless a per-request error must first be tied to its frame
                idle = False
                while (not exhausted and not request_errors and not lost
                       and len(self._in_flight) < self.max_in_flight):
                    if self._aborted.is_set():
                        return
                    frame = next(source, None)
                    if frame is None:
                        exhausted = True
                        break
                    if frame is IDLE:
                        idle = True
                        break
                    results.expect(frame.index)
                    if self._server_gone:
                        results.put(frame.index, Outcome(frame, None, "server unavailable", unavailable=True))
                        continue
                    try:
                        self._send(frame)
                    except InferenceServerException as err:
                        broken(_short(err))
                # 2. release what is complete, in frame order (failed frames too, before any wait)
                yield from results.ready()
                if (exhausted and not len(results)) or self._aborted.is_set():
                    return
                if lost:
                    reason = lost.pop()
                    if not self._reconnect(reason):
                        self._fail_in_flight(results, "server unavailable", unavailable=True)
                    continue
                if not self._in_flight:
                    continue
                # 3. wait for the next answer (briefly when the source may soon have a frame)
                try:
                    generation, result, error = self._events.get(
                        timeout=min(IDLE_WAIT, self.request_timeout) if idle else self.request_timeout)
                except queue.Empty:
                    if time.monotonic() - self._last_answer >= self.request_timeout:
                        broken(f"no answer for {self.request_timeout:.0f} s")
                    continue
                self._last_answer = time.monotonic()
                if result is _ABORT:
                    return
                if generation != self._generation:
                    continue  # a late event from a stream we already replaced
                if error is not None and _is_transport_error(error):
                    broken(_short(error))
                    continue
                if error is not None:
                    request_errors.append(_short(error))
                else:
                    self._accept(result, results)
                # Every request answers exactly once, so when the requests still in flight
                # number the unattributed errors, those requests are the failed ones.
                if request_errors and len(self._in_flight) <= len(request_errors):
                    self._fail_in_flight(results, request_errors[0])
                    request_errors.clear()
        finally:
            self._close()
            for index in self._in_flight:  # abandoned (interrupted or aborted): their slots are free again
                self.client._release(index)
            self._in_flight.clear()

    def _drain(self, results: ReorderBuffer) -> None:
        """Accept the answers of the current stream already waiting in the queue."""
        while True:
            try:
                generation, result, error = self._events.get_nowait()
            except queue.Empty:
                return
            if result is _ABORT:
                self._events.put((generation, result, error))  # process() still has to see it
                return
            if generation == self._generation and error is None:
                self._accept(result, results)

    def _accept(self, result, results: ReorderBuffer) -> None:
        try:
            index = int(result.get_response().id)
        except ValueError:
            return
        entry = self._in_flight.pop(index, None)
        if entry is None:
            return  # an answer for a frame already settled
        self.client._release(index)  # the server is done with this request's input
        frame, sent = entry
        latency = time.monotonic() - sent
        try:
            detections = self.client.codec.decode(result)
        except ValueError as err:
            results.put(index, Outcome(frame, None, f"bad response: {err}", latency))
            return
        self.answered += 1
        results.put(index, Outcome(frame, detections, None, latency))

