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

A server that is merely *slow* would otherwise keep its frames until `request_timeout` (300 s by
default) while the ordered output waits behind them. The rule, only with at least one other
server up and answering (`ServerStatus.SLOW`):

- **Slow**: the oldest frame a server holds has waited longer than its *limit*: `SLOWER` (4) x
  the median of the other servers' last `RECENT` (20) answer latencies, and never under
  `SLOW_FLOOR` (1 s), so noise on a fast model does not flap. A slow server takes no new frames.
- **Probes**: a slow server with nothing in flight gets a copy of a frame another server holds
  (at most one every `PROBE_GAP` s), so the ordered output never waits on it.
- **Recovered**: an answer (a probe's, or a late frame's) came within the limit and nothing it
  still holds is older than the limit. With no other server to compare with it takes frames again.
- **Rescued**: a frame held past the *deadline* (the limit, at least `RESCUE_FLOOR`, 2 s) that no
  other server holds. Files (`resend`) send a copy to another server and keep the first answer,
  dropping the other when it arrives; live runs give the frame up as failed (it is stale by then)
  and drop its late answer. Either way `stats.moved_slow` counts it and each frame still comes out
  exactly once, in order.

A frame sent to more than one server is settled by its first answer; `_answered` keeps the frames
settled while a copy is still out, so that copy's answer is dropped (its latency still counts).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from ..errors import ServerUnavailable, StreamerError
from ..frames import Frame, Outcome
from ..stages import ServerShare
from ..states import InferenceState, Word
from .client import TritonClient
from .stream import IDLE, IDLE_WAIT, InferenceStream, ReorderBuffer
from .targets import Target, resolve

Log = Callable[[str], None]

# The slow-server rule (see the module's docstring).
SLOWER = 4.0  # slow: the oldest held frame waited this many times the others' median answer...
SLOW_FLOOR = 1.0  # ... and at least this many seconds
RESCUE_FLOOR = 2.0  # a frame is resent (files) or given up (live) after its server's limit, at least this
RECENT = 20  # answer latencies kept per server for the others' median
PROBE_GAP = 1.0  # seconds between two probes of a slow server


def slow_limit(reference: float) -> float:
    """How long a frame may wait on a server whose peers answer in `reference` s (their median)."""
    return max(SLOW_FLOOR, SLOWER * reference)


def rescue_deadline(reference: float) -> float:
    """How long a frame may wait on a server before it is resent (files) or given up (live)."""
    return max(RESCUE_FLOOR, slow_limit(reference))


class ServerStatus(Word):
    """One pool server's standing, from its check and its answers."""

    CHECKING = "checking"  # being checked (model, contract, transport): counts as online meanwhile
    UP = "up"  # checked: takes frames
    SLOW = "slow"  # up, but answers much later than the others: no new frames, one probe at a time
    WAITING = "waiting"  # did not answer the check yet: joins when it is up
    OUT = "out"  # answers with the wrong model or contract: never used


@dataclass
class _Held:
    """A frame a server holds: sent to it (or in its stream's window), not yet answered there."""

    frame: Frame
    since: float  # time.monotonic() when the server took it
    rescued: bool = False  # resent to another server, or given up, for slowness: once is enough


@dataclass
class _Server:
    url: str
    client: TritonClient
    stream: InferenceStream
    thread: Optional[threading.Thread] = None
    leaving: bool = False  # no longer resolved: take nothing new, finish what is in flight
    holding: Dict[int, _Held] = field(default_factory=dict)  # frames sent to it, not yet answered by it
    status: ServerStatus = ServerStatus.CHECKING
    recent: Deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))  # its last answer latencies
    probed_at: float = float("-inf")  # when it last took a probe (while slow)

    @property
    def online(self) -> bool:
        """Can take frames: a leaving server never counts (once it has finished, nothing else
        would tell that it takes nothing; the pool would wait for it for ever)."""
        return not self.leaving and (self.status is ServerStatus.CHECKING or (
            self.status in (ServerStatus.UP, ServerStatus.SLOW) and self.stream.state is InferenceState.ONLINE))

    def waited(self, now: float) -> float:
        """How long the oldest frame it holds has waited (0: it holds none)."""
        return max((now - held.since for held in self.holding.values()), default=0.0)


@dataclass
class PoolStats:
    taken: Dict[str, int] = field(default_factory=dict)  # server -> frames it answered
    moved: int = 0  # frames taken back from a server that broke and given to another
    moved_slow: int = 0  # frames a slow server held past the deadline: resent to another (files) or given up (live)


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
        self._answered: Set[int] = set()  # frames settled while a copy is still out: its answer is dropped
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

    @property
    def moved_slow(self) -> int:
        return self.stats.moved_slow

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
        """The frames one server sends: frames given back by a broken server (or resent from a slow
        one) first, then new ones; a slow server only probes."""
        while True:
            with self._lock:
                if self._aborted.is_set() or server.leaving or self._gave_up:
                    return
                frame = self._next_frame(server)
                if frame is None:
                    if self._exhausted and not self._outstanding:
                        return  # everything is settled
                    self._lock.wait(IDLE_WAIT)  # nothing for this server now
                elif frame is not IDLE:
                    server.holding[frame.index] = _Held(frame, time.monotonic())
            yield IDLE if frame is None else frame

    def _next_frame(self, server: _Server) -> object:
        """(Under the lock.) The frame this server sends next, IDLE from an idle source, or None."""
        if server.status is ServerStatus.SLOW:
            return self._probe(server)
        for frame in self._requeued:
            if frame.index not in server.holding:  # its own frame resent for slowness goes elsewhere
                self._requeued.remove(frame)
                return frame
        if self._exhausted:
            return None
        frame = next(self._source, None)
        if frame is None:
            self._exhausted = True
            self._lock.notify_all()
        elif frame is not IDLE:
            self._expected.expect(frame.index)
            self._outstanding += 1
        return frame

    def _probe(self, server: _Server) -> Optional[Frame]:
        """A slow server's probe: once it holds nothing and `PROBE_GAP` has passed, a copy of the
        newest frame a server in good standing holds (the ordered output never waits on it)."""
        now = time.monotonic()
        if server.holding or now - server.probed_at < PROBE_GAP:
            return None
        held = [h for other in self._servers.values() if other is not server and other.status is ServerStatus.UP
                for h in other.holding.values() if h.frame.index not in self._answered]
        if not held:
            return None
        server.probed_at = now
        return max(held, key=lambda h: h.since).frame

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
                    self._watch_slow()
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
            self._take(server, outcome)
        return any_

    def _take(self, server: _Server, outcome: Outcome) -> None:
        """One server's outcome for a frame: the frame's first answer settles it; a failure waits
        for another copy when one is out, or goes back to the pool when the server broke (files)."""
        index = outcome.frame.index
        server.holding.pop(index, None)
        self._observe(server, outcome)
        elsewhere = self._copies_out(index)
        if index in self._answered:  # already settled by another copy's answer: dropped
            if not elsewhere:
                self._answered.discard(index)
            return
        if not outcome.ok and elsewhere:
            return  # another copy may still answer
        if not outcome.ok and outcome.unavailable and self.resend and not self._gave_up:
            self._requeued.append(outcome.frame)  # another server takes it
            self.stats.moved += 1
            return
        if outcome.ok:
            self.stats.taken[server.url] = self.stats.taken.get(server.url, 0) + 1
        self._settled(index, outcome)

    def _settled(self, index: int, outcome: Outcome) -> None:
        """A frame's one outcome: into the ordered output; copies still queued are withdrawn and
        copies still on a server are answered for (their answers are dropped)."""
        self._outstanding -= 1
        self._expected.put(index, outcome)
        for frame in [f for f in self._requeued if f.index == index]:
            self._requeued.remove(frame)
        if self._copies_out(index):
            self._answered.add(index)

    def _copies_out(self, index: int, besides: Optional[_Server] = None) -> bool:
        """Whether a server (other than `besides`) still holds the frame, or a copy of it waits to be sent."""
        return any(index in s.holding for s in self._servers.values() if s is not besides) or any(
            f.index == index for f in self._requeued)

    # -- slow servers (the rule is in the module's docstring) -------------------------------------------
    def _reference(self, server: _Server) -> Optional[float]:
        """The median of the other servers' recent answer latencies, those in good standing; None
        when there is none to compare with (one server up: nobody is slow)."""
        others = [latency for other in self._servers.values()
                  if other is not server and other.status is ServerStatus.UP and other.online
                  for latency in other.recent]
        return statistics.median(others) if others else None

    def _observe(self, server: _Server, outcome: Outcome) -> None:
        """An answer's latency joins the server's recent ones; a slow server that answered within
        its limit, holding nothing older, recovers."""
        if outcome.latency is None or (not outcome.ok and outcome.unavailable):
            return  # no answer came: nothing measured
        server.recent.append(outcome.latency)
        reference = self._reference(server)
        if server.status is not ServerStatus.SLOW or reference is None:
            return
        limit = slow_limit(reference)
        if outcome.latency <= limit and server.waited(time.monotonic()) <= limit:
            server.recent.clear()
            server.recent.append(outcome.latency)  # its slow answers no longer speak for it
            self._recover(server, f"answered in {outcome.latency:.2f} s")

    def _recover(self, server: _Server, why: str) -> None:
        server.status = ServerStatus.UP
        self.log(f"Triton server {server.url} is no longer slow ({why}); it takes frames again")

    def _watch_slow(self) -> None:
        """Mark servers slow, release them when none is left to compare with, and rescue the frames
        they held past the deadline (under the lock)."""
        now = time.monotonic()
        for server in list(self._servers.values()):
            if server.status not in (ServerStatus.UP, ServerStatus.SLOW):
                continue
            reference = self._reference(server)
            if reference is None:
                if server.status is ServerStatus.SLOW:
                    self._recover(server, "no other server to compare with")
                continue
            waited = server.waited(now)
            if server.status is ServerStatus.UP and waited > slow_limit(reference):
                server.status = ServerStatus.SLOW
                self.log(f"Triton server {server.url} is slow (a frame has waited {waited:.1f} s; the others "
                         f"answer in {reference:.2f} s): it takes no new frames until it answers in time")
            late = [held for held in server.holding.values()
                    if not held.rescued and now - held.since > rescue_deadline(reference)]
            for held in reversed(late):  # oldest last: it goes to the front of the queue
                self._rescue(server, held, now - held.since)

    def _rescue(self, server: _Server, held: _Held, waited: float) -> None:
        """A frame held past the deadline: files resend it (the first answer wins), live gives it up
        (stale by now); its late answer is dropped. A frame with a copy elsewhere already has one."""
        held.rescued = True
        index = held.frame.index
        if index in self._answered or self._copies_out(index, besides=server):
            return
        self.stats.moved_slow += 1
        if self.resend:
            self._requeued.appendleft(held.frame)  # first: the ordered output waits for it
        else:
            self._settled(index, Outcome(held.frame, None, f"Triton server {server.url} gave no answer in "
                                                         f"{waited:.1f} s (slow server)", waited))

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
            self._lock.notify_all()
        for server in list(self._servers.values()):
            server.thread.join(10)
        with self._lock:
            self._settle()
            # frames still counted as outstanding were queued, or in flight on the aborted streams
            for index, frame in self._pending_frames().items():
                self._expected.put(index, Outcome(frame, None, "server unavailable"))
            self._outstanding = 0
            while not self._exhausted:
                frame = next(self._source, None)
                if frame is None:
                    self._exhausted = True
                elif frame is not IDLE:
                    self._expected.expect(frame.index)
                    self._expected.put(frame.index, Outcome(frame, None, "server unavailable"))

    def _pending_frames(self) -> Dict[int, Frame]:
        """The frames not settled yet, once each (a frame may be queued and held, or held twice),
        taken out of the queue and the servers."""
        found = {frame.index: frame for frame in self._requeued}
        self._requeued.clear()
        for server in self._servers.values():
            found.update((index, held.frame) for index, held in server.holding.items())
            server.holding.clear()
        for index in self._answered:
            found.pop(index, None)
        self._answered.clear()
        return found
