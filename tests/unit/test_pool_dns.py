"""A dns:/// pool whose name changes while a file runs: addresses join, leave, leave and come back,
or the name resolves to nothing for a while; each frame still comes out exactly once, in order.

The name is looked up through a fake getaddrinfo whose table the frame source itself changes
at set frames; the source then offers no frame (IDLE) until the pool has acted on the change,
so every step happens at a known frame without any sleep standing for a wait. Servers are
fake tritonclient clients (tests/unit/test_reorder.py)."""

from __future__ import annotations

import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

import pytest

from streamer.errors import ServerUnavailable
from streamer.settings import ServerSettings, SettingsError
from streamer.states import InferenceState
from streamer.triton import ServerPool, ServerStatus, Target, TritonClient
from streamer.triton import pool as pool_module
from streamer.triton.stream import IDLE
from streamer.triton.targets import resolve

from ..helpers import wait_until
from .test_pool_targets import fake_getaddrinfo
from .test_reorder import WAIT, FakeGrpcClient, ScriptedClient, check_answer, make_frames

pytestmark = pytest.mark.timeout(60)

A, B = "10.0.0.1", "10.0.0.2"
URL = {A: f"{A}:8001", B: f"{B}:8001"}

Gate = Tuple[Callable[[], None], Callable[[], bool]]  # (change the world, then wait for this)


class DnsPool:
    """A pool over dns:///pods:8001 whose addresses are `table["pods"]`."""

    def __init__(self, monkeypatch, addresses, raw_for: Optional[Callable[[str], object]] = None, **kwargs):
        self.table: Dict[str, List[str]] = {"pods": list(addresses)}
        lookup = fake_getaddrinfo(self.table)
        monkeypatch.setattr(pool_module, "resolve", lambda targets: resolve(targets, lookup))
        self.fakes: Dict[str, list] = {}  # url -> every raw client made for it, in order
        self.logs: List[str] = []
        self.raw_for = raw_for or (lambda url: FakeGrpcClient(2, seed=len(self.fakes)))
        self.unready: set = set()  # urls whose check says the server does not answer

        def make_client(url: str) -> TritonClient:
            raw = self.raw_for(url)
            self.fakes.setdefault(url, []).append(raw)
            client = TritonClient(url, raw=raw)

            def check():
                if url in self.unready:
                    raise ServerUnavailable(f"no Triton server answers at {url}")

            monkeypatch.setattr(client, "check", check)
            monkeypatch.setattr(client, "ready", lambda: url not in self.unready)
            return client

        self.pool = ServerPool([Target("pods", 8001, dns=True)], make_client, log=self.logs.append,
                               **{"max_in_flight": 2, "refresh": 0.02, **kwargs})

    def set(self, *addresses: str) -> Callable[[], None]:
        def change():
            if addresses:
                self.table["pods"] = list(addresses)
            else:
                self.table.pop("pods", None)  # the name does not resolve (gaierror)
        return change

    def server(self, address: str):
        return self.pool._servers.get(URL[address])

    def requested(self, address: str) -> List[int]:
        """Frame indices every client of this address was sent (resent ones once per sending)."""
        return [int(rid) for raw in self.fakes.get(URL[address], []) for _, rid in raw.requests]

    def logged(self, text: str) -> int:
        return sum(text in line for line in list(self.logs))

    def close(self) -> None:
        self.pool.close()
        for raws in self.fakes.values():
            for raw in raws:
                if isinstance(raw, FakeGrpcClient):
                    raw.close()


def source(n: int, gates: Dict[int, Gate]):
    """Frames 0..n-1; before frame i in `gates`: its change, then IDLE until its condition holds
    (given up after WAIT: the test's assertions then say what did not happen)."""
    for frame in make_frames(n):
        if frame.index in gates:
            change, done = gates[frame.index]
            change()
            deadline = time.monotonic() + WAIT
            while not done() and time.monotonic() < deadline:
                yield IDLE
                time.sleep(0.002)
        yield frame


def run(pool: ServerPool, frames) -> list:
    outcomes = []
    thread = threading.Thread(target=lambda: outcomes.extend(pool.process(frames)), daemon=True)
    thread.start()
    thread.join(WAIT * 4)
    assert not thread.is_alive(), "the pool never finished"
    return outcomes


def check_lossless(outcomes, n: int) -> None:
    assert [o.frame.index for o in outcomes] == list(range(n)), "each frame exactly once, in order"
    for k, outcome in enumerate(outcomes):
        check_answer(outcome, k)


@pytest.fixture
def dns_pool(monkeypatch):
    made = []

    def make(*addresses, **kwargs) -> DnsPool:
        made.append(DnsPool(monkeypatch, addresses, **kwargs))
        return made[-1]

    yield make
    for d in made:
        d.close()


def test_an_address_joins_and_another_leaves_while_a_file_runs(dns_pool):
    d = dns_pool(A)
    joined = lambda: d.server(B) is not None and d.server(B).status is ServerStatus.UP  # noqa: E731
    outcomes = run(d.pool, source(100, {
        20: (d.set(A, B), joined),
        60: (d.set(B), lambda: d.server(A).leaving),
    }))
    check_lossless(outcomes, 100)
    assert d.logged(f"Triton server {URL[B]} joins the pool") == 1
    assert d.logged(f"Triton server {URL[A]} is no longer resolved; it finishes what it has and leaves") == 1
    a, b = d.requested(A), d.requested(B)
    assert a and max(a) < 60, "A takes nothing after it was told to leave"
    assert b and min(b) >= 20 and set(range(60, 100)) <= set(b), "B takes frames once it joined, all after A left"
    assert sorted(a + b) == list(range(100)), "no frame sent twice"
    shares = {s.url: s.frames for s in d.pool.servers()}
    assert shares == {URL[A]: len(a), URL[B]: len(b)} and d.pool.moved == 0
    assert not d.server(A).thread.is_alive(), "A's worker ended once it had finished"


def test_an_address_that_left_and_came_back_joins_again_with_a_new_client(dns_pool):
    d = dns_pool(A, B)
    first = []
    outcomes = run(d.pool, source(120, {
        30: (d.set(B), lambda: d.server(A).leaving and not d.server(A).thread.is_alive()),
        60: (lambda: (first.append(d.server(A)), d.set(A, B)()),
             lambda: d.server(A) is not first[0] and d.server(A).status is ServerStatus.UP),
    }))
    check_lossless(outcomes, 120)
    a = d.requested(A)
    assert not [i for i in a if 30 <= i < 60], "nothing while it was out of the name"
    assert [i for i in a if i < 30] and [i for i in a if i >= 60], "frames before it left and after it came back"
    old, new = d.fakes[URL[A]]
    assert old.closed and not new.closed, "the old client is closed when a new one takes its place"
    assert d.logged(f"Triton server {URL[A]} joins the pool") == 1
    assert sum(s.frames for s in d.pool.servers()) == 120


def test_a_name_that_resolves_to_nothing_for_a_while_keeps_its_servers(dns_pool, monkeypatch):
    d = dns_pool(A, B)
    warning = "WARNING: dns:///pods:8001 resolves to no address now; the pool keeps the servers it has"
    lookups = []
    real = pool_module.resolve
    monkeypatch.setattr(pool_module, "resolve", lambda targets: (lookups.append(1), real(targets))[1])
    since = {}

    def looked_again(after: int) -> Callable[[], bool]:
        return lambda: len(lookups) >= since.setdefault(after, len(lookups)) + 3

    outcomes = run(d.pool, source(120, {
        30: (d.set(), lambda: d.logged(warning) == 1),
        60: (d.set(A, B), looked_again(60)),  # resolved again: the warning may come again next time
        90: (d.set(), lambda: d.logged(warning) == 2),
    }))
    check_lossless(outcomes, 120)
    assert d.logged(warning) == 2, "once per time the name stops resolving"
    assert not d.logged("no longer resolved") and not d.logged("joins the pool")
    assert not d.server(A).leaving and not d.server(B).leaving
    a, b = d.requested(A), d.requested(B)
    assert sorted(a + b) == list(range(120))
    assert [i for i in a + b if 30 <= i < 60] and [i for i in a + b if i >= 90], "frames went on meanwhile"


def test_a_leaving_server_that_breaks_hands_what_it_held_to_the_pool(dns_pool):
    scripted = ScriptedClient()
    d = dns_pool(A, raw_for=lambda url: scripted if url == URL[A] else FakeGrpcClient(2, seed=1))
    outcomes: list = []
    thread = threading.Thread(target=lambda: outcomes.extend(d.pool.process(make_frames(40))), daemon=True)
    thread.start()
    scripted.wait_requests(1, 2)  # A holds frames 0 and 1, unanswered
    d.set(B)()
    wait_until(lambda: d.server(A).leaving and d.logged("joins the pool"), WAIT, 0.01, "A leaving, B joined")
    wait_until(lambda: len(d.requested(B)) == 38, WAIT, 0.01, "B taking every other frame")
    assert [o.frame.index for o in outcomes] == [], "frames 0 and 1 are still held by A"
    scripted.breaks(1)  # A breaks before answering: what it held goes back to the pool
    thread.join(WAIT)
    assert not thread.is_alive()
    check_lossless(outcomes, 40)
    assert sorted(d.requested(B)) == list(range(40)), "B took A's two frames too"
    assert d.pool.moved == 2
    assert {s.url: s.frames for s in d.pool.servers()} == {URL[A]: 0, URL[B]: 40}


def test_a_finished_leaving_server_is_not_counted_as_up(dns_pool):
    """A leaves for B, which never answers: once A has finished, no server is up, and the file
    follows the single-server rules (--retry-timeout, then the rest fails) instead of waiting for ever."""
    d = dns_pool(A, retry_timeout=1.0)
    d.unready.add(URL[B])
    outcomes = run(d.pool, source(30, {10: (d.set(B), lambda: d.server(A).leaving)}))
    assert [o.frame.index for o in outcomes] == list(range(30))
    assert all(o.ok for o in outcomes[:10]) and not any(o.ok for o in outcomes[10:])
    assert d.logged("no server came back within 1 s") == 1
    assert d.logged(f"Triton server {URL[B]} does not answer") == 1
    assert d.pool.state is InferenceState.OFFLINE


def test_the_refresh_interval_must_be_positive():
    with pytest.raises(ValueError, match="more than 0"):
        ServerPool([Target("pods", 8001, dns=True)], lambda url: None, refresh=0)
    with pytest.raises(SettingsError, match="--dns-refresh must be more than 0"):
        ServerSettings(dns_refresh=0)
    assert ServerSettings().dns_refresh == 30.0
