"""Several Triton servers as one pool: each server its own gRPC stream and in-flight window.

A gRPC stream stays on one connection, so a Kubernetes Service would pin every stream to
one pod: the client spreads the work itself. `targets.parse_targets` turns `--triton` into
servers (`host1:8001,host2:8001`; `dns:///name:8001` = every address the name resolves to,
looked up again now and then so new replicas join and removed ones leave).

`ServerPool` is a `stages.Inference` as InferenceStream is: `process(frames)` has its contract (outcomes in frame order, each
frame exactly once): one worker thread per server pulls the next frame whenever its window
has room, so frames go where there is free capacity. When a server breaks, the frames it
had in flight go back to the pool and the other servers take them (files stay lossless);
the broken server rejoins when it is back. Only when every server is gone do the
single-server rules apply: wait `retry_timeout`, then the remaining frames fail.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from ..errors import ServerUnavailable, StreamerError
from ..frames import Frame, Outcome
from ..stages import ServerShare
from ..states import InferenceState, Word
from .client import TritonClient
from .stream import IDLE, IDLE_WAIT, InferenceStream, ReorderBuffer
from .targets import Target, resolve

Log = Callable[[str], None]

class ServerStatus(Word):
    """One pool server's standing, from its check."""

    CHECKING = "checking"  # being checked (model, contract, transport): counts as online meanwhile
    UP = "up"  # checked: takes frames
    WAITING = "waiting"  # did not answer the check yet: joins when it is up
    OUT = "out"  # answers with the wrong model or contract: never used


@dataclass
class _Server:
    url: str
    client: TritonClient
    stream: InferenceStream
    thread: Optional[threading.Thread] = None
    leaving: bool = False  # no longer resolved: take nothing new, finish what is in flight
    holding: Dict[int, Frame] = field(default_factory=dict)  # frames sent to it, not yet settled
    status: ServerStatus = ServerStatus.CHECKING

    @property
    def online(self) -> bool:
        """Can take frames: a leaving server never counts (once it has finished, nothing else
        would tell that it takes nothing; the pool would wait for it for ever)."""
        return not self.leaving and (self.status is ServerStatus.CHECKING or (
            self.status is ServerStatus.UP and self.stream.state is InferenceState.ONLINE))


@dataclass
class PoolStats:
    taken: Dict[str, int] = field(default_factory=dict)  # server -> frames it answered
    moved: int = 0  # frames taken back from a server that broke and given to another


class ServerPool:
    """InferenceStream's contract over several servers (see the module's docstring): a `stages.Inference`."""

    def __init__(self, targets: Sequence[Target], make_client: Callable[[str], TritonClient],
                 max_in_flight: int = 2, retry_timeout: float = 60.0, request_timeout: float = 300.0,
                 resend: bool = True, log: Log = print, refresh: float = 30.0, initial: Sequence[str] = ()):
        self.targets = tuple(targets)
        self.make_client = make_client
        self.max_in_flight = max_in_flight
        self.retry_timeout = retry_timeout
        self.request_timeout = request_timeout
        self.resend = resend
        self.log = log
        if not refresh > 0:
            raise ValueError(f"refresh must be more than 0 seconds (got {refresh})")
        self.refresh = refresh  # seconds between lookups of the dns:/// names (--dns-refresh)
        self.stats = PoolStats()
        self._initial = list(initial)
        self._servers: Dict[str, _Server] = {}
        self._lock = threading.Condition()
        self._aborted = threading.Event()
        self._results: Deque[Tuple[_Server, Outcome]] = deque()
        self._requeued: Deque[Frame] = deque()
        self._exhausted = False
        self._source: Optional[Iterator[Frame]] = None
        self._expected: Optional[ReorderBuffer] = None
        self._outstanding = 0  # frames taken from the source and not yet settled
        self._all_down_since: Optional[float] = None
        self._gave_up = False
        self._resolved_at = 0.0
        self._unresolved_said = False  # the warning that a dns:/// name resolves to nothing, once per outage

    # -- what the pipelines read ----------------------------------------------------------------------
    @property
    def state(self) -> InferenceState:
        online = any(s.online for s in list(self._servers.values()))
        return InferenceState.ONLINE if online else InferenceState.OFFLINE

    @property
    def reconnects(self) -> int:
        return sum(s.stream.reconnects for s in list(self._servers.values()))

    def abort(self) -> None:
        self._aborted.set()
        for server in list(self._servers.values()):
            server.stream.abort()
        with self._lock:
            self._lock.notify_all()

    def compute_stats(self) -> Tuple[int, float]:
        count, seconds = 0, 0.0
        for server in list(self._servers.values()):
            c, s = server.client.compute_stats()
            count, seconds = count + c, seconds + s
        return count, seconds

    def close(self) -> None:
        for server in list(self._servers.values()):
            server.client.close()

    def servers(self) -> List[ServerShare]:
        """Frames each server answered, in the order the servers joined."""
        return [ServerShare(url, frames) for url, frames in list(self.stats.taken.items())]

    @property
    def moved(self) -> int:
        return self.stats.moved

    # -- membership -------------------------------------------------------------------------------------
    def _add(self, url: str) -> None:
        client = self.make_client(url)
        stream = InferenceStream(client, max_in_flight=self.max_in_flight, retry_timeout=float("inf"),
                                 request_timeout=self.request_timeout, log=self.log, resend=False)
        server = _Server(url, client, stream)
        self._servers[url] = server
        self.stats.taken.setdefault(url, 0)
        server.thread = threading.Thread(target=self._work, args=(server,), name=f"server {url}", daemon=True)
        server.thread.start()

    def _refresh(self, force: bool = False) -> None:
        """Look the dns:/// names up again (every `refresh` seconds): new addresses join, addresses no
        longer resolved leave (they take nothing new and finish what they hold; if one breaks
        meanwhile, its frames go back to the pool as any broken server's do). A dns:/// name that
        resolves to no address at all is taken as a failed lookup, not as "every server left": the
        pool keeps the servers it has (those that are really gone break and are waited for as any
        broken server, --retry-timeout). An address that comes back after leaving joins again as
        soon as its old worker has finished what it held."""
        now = time.monotonic()
        if not force and (now - self._resolved_at < self.refresh or not any(t.dns for t in self.targets)):
            return
        self._resolved_at = now
        urls: List[str] = []
        unresolved = []
        for target in self.targets:
            found = resolve([target])
            if target.dns and not found:
                unresolved.append(target.text)
            urls.extend(url for url in found if url not in urls)
        for url in urls:
            server = self._servers.get(url)
            if server is not None and not server.leaving:
                continue
            if server is not None:  # it left and came back: a new worker once the old one has finished
                if server.thread is not None and server.thread.is_alive():
                    self._resolved_at = now - self.refresh + min(self.refresh, 1.0)  # look again in a second
                    continue
                server.client.close()  # its shared-memory regions and channel; the new worker has its own
            self.log(f"Triton server {url} joins the pool")
            self._add(url)
        if unresolved and not self._unresolved_said:
            self.log(f"WARNING: {', '.join(unresolved)} resolves to no address now; the pool keeps the "
                     "servers it has until it resolves again")
        self._unresolved_said = bool(unresolved)
        with self._lock:  # a leaving server takes no frame after this: its worker looks under the lock
            for url, server in self._servers.items():
                if not unresolved and url not in urls and not server.leaving:
                    server.leaving = True
                    self.log(f"Triton server {url} is no longer resolved; it finishes what it has and leaves")
            self._lock.notify_all()

    # -- the workers ----------------------------------------------------------------------------------
    def _pull(self, server: _Server) -> Iterator[object]:
        """The frames one server sends: frames given back by a broken server first, then new ones."""
        while True:
            with self._lock:
                if self._aborted.is_set() or server.leaving or self._gave_up:
                    return
                if self._requeued:
                    frame = self._requeued.popleft()
                elif not self._exhausted:
                    frame = next(self._source, None)
                    if frame is None:
                        self._exhausted = True
                        self._lock.notify_all()
                        continue
                    if frame is not IDLE:
                        self._expected.expect(frame.index)
                        self._outstanding += 1
                else:
                    frame = None
                    if not self._outstanding:
                        return  # everything is settled
                    self._lock.wait(IDLE_WAIT)
                if frame is not None and frame is not IDLE:
                    server.holding[frame.index] = frame
            yield IDLE if frame is None else frame

    def _ready(self, server: _Server) -> bool:
        """Check the server (model, contract, transport) before it takes frames; one that does
        not answer yet is waited for (it joins when it is up). False: never use it."""
        said = False
        while not (self._aborted.is_set() or server.leaving or self._gave_up):
            try:
                server.client.check()
                server.status = ServerStatus.UP
                return True
            except ServerUnavailable as err:
                server.status = ServerStatus.WAITING
                if not said:
                    self.log(f"Triton server {server.url} does not answer ({err}); it joins when it is up")
                    said = True
                self._aborted.wait(1.0)
            except StreamerError as err:
                server.status = ServerStatus.OUT
                self.log(f"WARNING: Triton server {server.url} is left out: {err}")
                return False
        return False

    def _work(self, server: _Server) -> None:
        if not self._ready(server):
            return
        for outcome in server.stream.process(self._pull(server)):
            with self._lock:
                self._results.append((server, outcome))
                self._lock.notify_all()

    # -- the ordered generator ------------------------------------------------------------------------
    def process(self, frames: Iterable[Frame]) -> Iterator[Outcome]:
        self._source = iter(frames)
        self._expected = ReorderBuffer()
        urls = self._initial or resolve(self.targets)
        self._resolved_at = time.monotonic()
        for url in urls:
            self._add(url)
        if not self._servers:
            self._servers_gone("no server address resolved")
        try:
            while True:
                with self._lock:
                    settled = self._settle()
                    ready = list(self._expected.ready())
                    done = self._exhausted and not self._outstanding and not self._requeued
                    if not ready and not settled and not done:
                        self._lock.wait(IDLE_WAIT)
                yield from ready
                if self._aborted.is_set() or (done and not len(self._expected)):
                    return
                self._refresh()
                self._check_all_down()
        finally:
            self._aborted.set()
            for server in list(self._servers.values()):
                server.stream.abort()
            with self._lock:
                self._lock.notify_all()
            for server in list(self._servers.values()):
                server.thread.join(10)

    def _settle(self) -> bool:
        """Take the workers' outcomes (under the lock). True when any arrived."""
        any_ = bool(self._results)
        while self._results:
            server, outcome = self._results.popleft()
            server.holding.pop(outcome.frame.index, None)
            if not outcome.ok and outcome.unavailable and self.resend and not self._gave_up:
                self._requeued.append(outcome.frame)  # another server takes it
                self.stats.moved += 1
                continue
            self._outstanding -= 1
            if outcome.ok:
                self.stats.taken[server.url] = self.stats.taken.get(server.url, 0) + 1
            self._expected.put(outcome.frame.index, outcome)
        return any_

    def _check_all_down(self) -> None:
        if self.state is InferenceState.ONLINE or not self.resend:
            self._all_down_since = None
            return
        now = time.monotonic()
        if self._all_down_since is None:
            self._all_down_since = now
            self.log(f"every Triton server is unreachable; waiting up to {self.retry_timeout:.0f} s "
                     "(--retry-timeout) for one to come back")
            return
        if now - self._all_down_since >= self.retry_timeout:
            self._servers_gone(f"no server came back within {self.retry_timeout:.0f} s")

    def _servers_gone(self, reason: str) -> None:
        """Every server is gone: the rest of the frames fail (files are still written whole)."""
        self.log(f"{reason}; remaining frames are written unannotated")
        with self._lock:
            self._gave_up = True
            for server in self._servers.values():
                server.stream.abort()
            failed = list(self._requeued)
            self._requeued.clear()
            for frame in failed:
                self._outstanding -= 1
                self._expected.put(frame.index, Outcome(frame, None, "server unavailable"))
            self._lock.notify_all()
        for server in list(self._servers.values()):
            server.thread.join(10)
        with self._lock:
            self._settle()
            # frames still counted as outstanding were in flight on the aborted streams
            for index, frame in self._pending_frames():
                self._expected.put(index, Outcome(frame, None, "server unavailable"))
            self._outstanding = 0
            while not self._exhausted:
                frame = next(self._source, None)
                if frame is None:
                    self._exhausted = True
                elif frame is not IDLE:
                    self._expected.expect(frame.index)
                    self._expected.put(frame.index, Outcome(frame, None, "server unavailable"))

    def _pending_frames(self) -> List[Tuple[int, Frame]]:
        found = []
        for server in self._servers.values():
            found.extend(server.holding.items())
            server.holding.clear()
        return found
