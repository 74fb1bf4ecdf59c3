"""Several Triton servers as one pool: each server its own gRPC stream and in-flight window.

A gRPC stream stays on one connection, so a Kubernetes Service would pin every stream to
one pod: the client spreads the work itself. `targets()` turns `--triton` into servers
(`host1:8001,host2:8001`; `dns:///name:8001` = every address the name resolves to, looked
up again now and then so new replicas join and removed ones leave).

`ServerPool.process(frames)` has InferenceStream's contract (outcomes in frame order, each
frame exactly once): one worker thread per server pulls the next frame whenever its window
has room, so frames go where there is free capacity. When a server breaks, the frames it
had in flight go back to the pool and the other servers take them (files stay lossless);
the broken server rejoins when it is back. Only when every server is gone do the
single-server rules apply: wait `retry_timeout`, then the remaining frames fail.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from .errors import ServerUnavailable, StreamerError
from .frames import Frame
from .settings import SettingsError
from .triton import IDLE, IDLE_WAIT, InferenceStream, Outcome, ReorderBuffer, TritonClient

Log = Callable[[str], None]

DNS_PREFIX = "dns:///"
DEFAULT_PORT = 8001


def split_host_port(text: str, where: str = "--triton") -> Tuple[str, int]:
    """`host:port`, `[v6]:port` or `host` (port 8001)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        sep, port = rest[:1], rest[1:]
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, ""
    if not host:
        raise SettingsError(f"{where}: {text!r}: missing host (e.g. localhost:8001)")
    if sep and (not port.isdigit() or not 0 < int(port) < 65536):
        raise SettingsError(f"{where}: {text!r}: the port must be a number 1-65535")
    return host, int(port) if port else DEFAULT_PORT


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Target:
    """One entry of --triton: a fixed server, or a DNS name standing for all its addresses."""

    host: str
    port: int
    dns: bool = False

    @property
    def text(self) -> str:
        return (DNS_PREFIX if self.dns else "") + address(self.host, self.port)


def parse_targets(text: str, where: str = "--triton") -> Tuple[Target, ...]:
    """`a:8001,b:8001` / `dns:///name:8001`, duplicates dropped (order kept)."""
    found: List[Target] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        dns = part.startswith(DNS_PREFIX)
        if dns:
            part = part[len(DNS_PREFIX):]
        elif "://" in part:
            scheme = part.partition("://")[0]
            if scheme != "grpc":
                raise SettingsError(f"{where}: give each gRPC endpoint as HOST:PORT (e.g. localhost:8001) "
                                        f"or dns:///NAME:PORT, not a {scheme} URL")
            part = part.partition("://")[2]
        host, port = split_host_port(part, where)
        target = Target(host, port, dns)
        if target not in found:
            found.append(target)
    if not found:
        raise SettingsError(f"{where}: no server given")
    return tuple(found)


def resolve(targets: Sequence[Target], getaddrinfo=socket.getaddrinfo) -> List[str]:
    """The server addresses the targets stand for: a plain name stays one server (its name);
    a dns:/// name becomes every address it resolves to (none when it does not resolve)."""
    urls: List[str] = []
    for t in targets:
        if not t.dns:
            candidates = [address(t.host, t.port)]
        else:
            try:
                infos = getaddrinfo(t.host, t.port, type=socket.SOCK_STREAM)
            except socket.gaierror:
                infos = []
            candidates = sorted({address(info[4][0], t.port) for info in infos})
        for url in candidates:
            if url not in urls:
                urls.append(url)
    return urls


@dataclass
class _Server:
    url: str
    client: TritonClient
    stream: InferenceStream
    thread: Optional[threading.Thread] = None
    leaving: bool = False  # no longer resolved: take nothing new, finish what is in flight
    holding: Dict[int, Frame] = field(default_factory=dict)  # frames sent to it, not yet settled
    status: str = "checking"  # checking -> up; waiting (did not answer the check yet); out (wrong model)

    @property
    def online(self) -> bool:
        return self.status == "checking" or (self.status == "up" and self.stream.state == "online")


@dataclass
class PoolStats:
    taken: Dict[str, int] = field(default_factory=dict)  # server -> frames it answered
    moved: int = 0  # frames taken back from a server that broke and given to another


class ServerPool:
    """InferenceStream's contract over several servers (see the module's docstring)."""

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
        self.refresh = refresh
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

    # -- what the pipelines read ----------------------------------------------------------------------
    @property
    def state(self) -> str:
        return "online" if any(s.online for s in list(self._servers.values())) else "offline"

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
        now = time.monotonic()
        if not force and (now - self._resolved_at < self.refresh or not any(t.dns for t in self.targets)):
            return
        self._resolved_at = now
        urls = resolve(self.targets)
        for url in urls:
            if url not in self._servers or self._servers[url].leaving:
                if url in self._servers:  # it left and came back: a new worker once the old one ended
                    if self._servers[url].thread.is_alive():
                        continue
                self.log(f"Triton server {url} joins the pool")
                self._add(url)
        for url, server in self._servers.items():
            if url not in urls and not server.leaving:
                self.log(f"Triton server {url} is no longer resolved; it finishes what it has and leaves")
                server.leaving = True
        with self._lock:
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
                server.status = "up"
                return True
            except ServerUnavailable as err:
                server.status = "waiting"
                if not said:
                    self.log(f"Triton server {server.url} does not answer ({err}); it joins when it is up")
                    said = True
                self._aborted.wait(1.0)
            except StreamerError as err:
                server.status = "out"
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
        if self.state == "online" or not self.resend:
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
