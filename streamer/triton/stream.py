"""`InferenceStream.process(frames)`: frames over one gRPC stream, outcomes in frame order.

A bounded number in flight (request id = frame index). Per-request errors carry no
reliable id: when one arrives we stop sending until everything in flight has answered,
and the requests left without a result are the failed ones. A transport error (server
gone) ends the stream: we wait for the server (bounded), open a new stream and resend what
was in flight. A live run instead fails what was in flight (stale by then), waits as long
as it runs (`abort()` ends the wait), and its `state` tells the display whether inference
is online.

process() moves through explicit phases (`Phase`):

    FILLING ──window full / source idle or ended──▶ DRAINING ──an answer──▶ FILLING
       │  ▲                                             │
       │  └──────────── reopened, resent ◀── RECONNECTING ◀── the stream broke (or no answer in time)
       └──▶ DONE: the source ended and every frame was released, or abort()

Between phases, what is complete is released in frame order (failed frames too) before
anything waits.
"""

from __future__ import annotations

import functools
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

from ..errors import ServerUnavailable
from ..frames import Frame, Outcome
from ..stages import ServerShare
from ..states import InferenceState
from .client import Reply, StreamSession, TritonClient
from .errors import StreamBroken, TritonFailure

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# Yielded by a frame source that has nothing to send right now (a live scheduler whose
# cameras have no new frame, a server pool whose work is elsewhere): process() goes on
# releasing answers and asks again soon, instead of the source blocking with answers waiting.
IDLE = object()
IDLE_WAIT = 0.05  # seconds process() waits for answers before asking an idle source again

_ABORT = object()  # put on the event queue by abort()


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


class Phase(Enum):
    """Where process() is (see the module's docstring)."""

    NEW = "new"  # process() not called yet
    FILLING = "filling"  # taking frames from the source while the window has room
    DRAINING = "draining"  # waiting for an answer: the window is full, the source idle or ended, or an
    # error must first be tied to its frame
    RECONNECTING = "reconnecting"  # the stream broke: waiting for the server, then resending what was in flight
    DONE = "done"  # the source ended and every frame was released, or process() was aborted


@dataclass
class _Run:
    """What one process() call holds beyond the frames in flight."""

    source: Iterator
    results: ReorderBuffer = field(default_factory=ReorderBuffer)
    exhausted: bool = False  # the source ended
    idle: bool = False  # the source had nothing to send when last asked
    request_errors: List[str] = field(default_factory=list)  # per-request errors not yet tied to a frame
    lost: Optional[str] = None  # why the stream broke, until it is reopened


Event = Tuple[int, object, Optional[TritonFailure]]  # (stream generation, Reply or _ABORT, error)


class InferenceStream:
    """Ordered, lossless streaming inference of a sequence of frames (a `stages.Inference`).

    recover() is called after the stream broke; it may restart a server it owns.
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
        self.phase = Phase.NEW
        self.reconnects = 0
        self.resent = 0
        self.answered = 0  # frames the server answered with detections
        self._aborted = threading.Event()
        self._events: "queue.Queue[Event]" = queue.Queue()
        self._generation = 0
        self._session: Optional[StreamSession] = None
        self._server_gone = False
        self._in_flight: Dict[int, Tuple[Frame, float]] = {}
        self._last_answer = time.monotonic()  # or the last send into an empty window

    # -- stages.Inference ---------------------------------------------------------------------
    def compute_stats(self) -> Tuple[int, float]:
        """The server's (inferences, compute seconds) so far."""
        return self.client.compute_stats()

    def abort(self) -> None:
        """From another thread: make process() return soon, dropping what is in flight."""
        self._aborted.set()
        self._events.put((self._generation, _ABORT, None))

    def close(self) -> None:
        """Nothing to release: the client is the session's, closed by its owner."""

    def servers(self) -> List[ServerShare]:
        return [ServerShare(self.client.url, self.answered)]

    @property
    def moved(self) -> int:
        return 0  # one server: nothing is given to another

    @property
    def moved_slow(self) -> int:
        return 0  # one server: none is slower than the others

    # -- the gRPC stream ------------------------------------------------------------------
    def _on_answer(self, generation: int, reply: Optional[Reply], error: Optional[TritonFailure]) -> None:
        # Called on tritonclient's thread. Only enqueue.
        self._events.put((generation, reply, error))

    def _callback(self):
        self._last_answer = time.monotonic()
        self._generation += 1
        return functools.partial(self._on_answer, self._generation)

    def _open(self) -> None:
        self._session = self.client.open_stream(self._callback())

    def _reopen(self) -> None:
        self._session.reopen(self._callback())

    def _close(self) -> None:
        if self._session is not None:
            self._session.close()

    def _send(self, frame: Frame) -> None:
        if not self._in_flight:
            self._last_answer = time.monotonic()  # the wait for an answer starts now
        self._in_flight[frame.index] = (frame, time.monotonic())
        self._session.send(frame.index, frame.image, frame.index)

    def _release(self, index: int) -> None:
        self._session.release(index)

    # -- the ordered generator --------------------------------------------------------------
    def process(self, frames: Iterable[Frame]) -> Iterator[Outcome]:
        run = _Run(iter(frames))
        self.phase = Phase.FILLING
        self._open()
        try:
            while True:
                if self.phase is Phase.FILLING:
                    self.phase = self._fill(run)
                    if self.phase is Phase.DONE:
                        return
                yield from run.results.ready()  # failed frames too, before any wait
                self.phase = self._after_release(run)
                if self.phase is Phase.DONE:
                    return
                if self.phase is Phase.RECONNECTING:
                    self.phase = self._reconnect(run)
                elif self.phase is Phase.DRAINING:
                    self.phase = self._wait(run)
                    if self.phase is Phase.DONE:
                        return
        finally:
            self.phase = Phase.DONE
            self._close()
            for index in self._in_flight:  # abandoned (interrupted or aborted): their slots are free again
                self._release(index)
            self._in_flight.clear()

    def _fill(self, run: _Run) -> Phase:
        """FILLING: keep the window full, unless a per-request error must first be tied to its
        frame. DRAINING when the window is full or the source has nothing now; RECONNECTING when
        a send found the stream broken; DONE when aborted."""
        run.idle = False
        while not run.exhausted and not run.request_errors and len(self._in_flight) < self.max_in_flight:
            if self._aborted.is_set():
                return Phase.DONE
            frame = next(run.source, None)
            if frame is None:
                run.exhausted = True
                break
            if frame is IDLE:
                run.idle = True
                break
            run.results.expect(frame.index)
            if self._server_gone:
                run.results.put(frame.index, Outcome(frame, None, "server unavailable", unavailable=True))
                continue
            try:
                self._send(frame)
            except ServerUnavailable as err:  # the stream broke, or the server went (registering a region)
                self._broken(run, str(err))
                return Phase.RECONNECTING
        return Phase.DRAINING

    def _after_release(self, run: _Run) -> Phase:
        """What comes once the complete outcomes are released."""
        if (run.exhausted and not len(run.results)) or self._aborted.is_set():
            return Phase.DONE
        if run.lost is not None:
            return Phase.RECONNECTING
        if not self._in_flight:
            return Phase.FILLING
        return Phase.DRAINING

    def _wait(self, run: _Run) -> Phase:
        """DRAINING: wait for the next answer (briefly when the source may soon have a frame)."""
        try:
            generation, reply, error = self._events.get(
                timeout=min(IDLE_WAIT, self.request_timeout) if run.idle else self.request_timeout)
        except queue.Empty:
            if time.monotonic() - self._last_answer >= self.request_timeout:
                self._broken(run, f"no answer for {self.request_timeout:.0f} s")
                return Phase.RECONNECTING
            return Phase.FILLING
        self._last_answer = time.monotonic()
        if reply is _ABORT:
            return Phase.DONE
        if generation != self._generation:
            return Phase.FILLING  # a late event from a stream we already replaced
        if isinstance(error, StreamBroken):
            self._broken(run, str(error))
            return Phase.RECONNECTING
        if error is not None:
            run.request_errors.append(str(error))
        else:
            self._accept(reply, run.results)
        # Every request answers exactly once, so when the requests still in flight
        # number the unattributed errors, those requests are the failed ones.
        if run.request_errors and len(self._in_flight) <= len(run.request_errors):
            self._fail_in_flight(run.results, run.request_errors[0])
            run.request_errors.clear()
        return Phase.FILLING

    def _broken(self, run: _Run, reason: str) -> None:
        """The stream broke. Keep answers that arrived before the failure; everything still in
        flight is then resent (or failed), so errors not yet tied to a frame no longer count."""
        self._drain(run.results)
        run.request_errors.clear()
        if not self.resend:  # live: by the time the server is back, these frames are stale
            self._fail_in_flight(run.results, f"server unavailable ({reason})", unavailable=True)
        run.lost = reason  # reconnect once what is settled has been released

    # -- RECONNECTING ---------------------------------------------------------------------------
    def _reconnect(self, run: _Run) -> Phase:
        """Wait for the server, reopen, resend; when it does not come back in time (or process()
        is aborted meanwhile), what is in flight fails. FILLING either way."""
        reason, run.lost = run.lost, None
        if not self._wait_and_resend(reason):
            self._fail_in_flight(run.results, "server unavailable", unavailable=True)
        return Phase.FILLING

    def _wait_and_resend(self, reason: str) -> bool:
        """After a transport failure: wait for the server, reopen, resend. False: gave up."""
        self._close()
        self.state = InferenceState.OFFLINE
        pending = sorted(self._in_flight)
        self._say_unreachable(reason, len(pending))
        deadline = time.monotonic() + self.retry_timeout
        while time.monotonic() < deadline and not self._aborted.is_set():
            self._recover_server()
            if self.client.ready():
                try:
                    self._reopen()
                    for index in pending:
                        self._send(self._in_flight[index][0])
                except ServerUnavailable:
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

    def _say_unreachable(self, reason: str, pending: int) -> None:
        if self.retry_timeout == float("inf"):
            self.log(f"Triton at {self.client.url} is unreachable ({reason}); waiting for it")
        else:
            self.log(
                f"Triton at {self.client.url} is unreachable ({reason}); waiting up to "
                f"{self.retry_timeout:.0f} s for it (--retry-timeout) to resend {pending} frame(s) in flight"
            )

    def _recover_server(self) -> None:
        if self.recover is not None:
            try:
                self.recover()
            except Exception as err:  # the server we own failed to restart: keep trying
                self.log(f"restarting the server failed: {err}")

    # -- outcomes ---------------------------------------------------------------------------------
    def _fail_in_flight(self, results: ReorderBuffer, message: str, unavailable: bool = False) -> None:
        for index, (frame, sent) in self._in_flight.items():
            self._release(index)
            results.put(index, Outcome(frame, None, message, time.monotonic() - sent, unavailable))
        self._in_flight.clear()

    def _drain(self, results: ReorderBuffer) -> None:
        """Accept the answers of the current stream already waiting in the queue."""
        while True:
            try:
                generation, reply, error = self._events.get_nowait()
            except queue.Empty:
                return
            if reply is _ABORT:
                self._events.put((generation, reply, error))  # process() still has to see it
                return
            if generation == self._generation and error is None:
                self._accept(reply, results)

    def _accept(self, reply: Reply, results: ReorderBuffer) -> None:
        try:
            index = int(reply.request_id)
        except ValueError:
            return
        entry = self._in_flight.pop(index, None)
        if entry is None:
            return  # an answer for a frame already settled
        self._release(index)  # the server is done with this request's input
        frame, sent = entry
        latency = time.monotonic() - sent
        try:
            detections = reply.detections()
        except ValueError as err:
            results.put(index, Outcome(frame, None, f"bad response: {err}", latency))
            return
        self.answered += 1
        results.put(index, Outcome(frame, detections, None, latency))
