"""ServerPool around a slow server, over fake tritonclient clients (no server): the slow server is
marked and takes no new frames, what it held past the deadline is resent (files: the first answer
wins) or given up (live), its late answers are dropped, it recovers once a probe answers in time,
and the output is still every frame exactly once, in order, with the counters right.

The rule's floors are shrunk so a test takes a fraction of a second; the slow server is one whose
answers are held until the test lets them go (no timing decides what is asserted)."""

from __future__ import annotations

import threading
import time
from typing import Dict, List

import pytest

from streamer.triton import IDLE, ServerPool, ServerStatus, Target, TritonClient
from streamer.triton import pool as pool_module

from ..helpers import wait_until
from .test_reorder import WAIT, FakeGrpcClient, check_answer, make_frames, run_in_thread

pytestmark = pytest.mark.timeout(60)


class StalledClient(FakeGrpcClient):
    """A fake server that answers nothing until `go` is set (a frozen server): what it was sent
    waits, and is answered, late, once it goes on."""

    def __init__(self, *args, **kwargs):
        self.go = threading.Event()
        super().__init__(*args, **kwargs)

    def _run(self):
        self.go.wait()
        super()._run()

    def close(self):
        self.go.set()
        super().close()


class Gate:
    """A frame source as a live scheduler with nothing new yields it: IDLE until `ready()` (both
    servers checked, so both take frames), the first `before` frames, IDLE until `open` is set,
    then the rest."""

    def __init__(self, n: int, before: int, ready):
        self.frames = make_frames(n)
        self.before = before
        self.ready = ready
        self.open = threading.Event()

    def _idle_until(self, condition):
        while not condition():
            time.sleep(0.005)
            yield IDLE

    def __iter__(self):
        yield from self._idle_until(self.ready)
        yield from self.frames[:self.before]
        yield from self._idle_until(self.open.is_set)
        yield from self.frames[self.before:]


@pytest.fixture
def quick_rule(monkeypatch):
    """The slow rule with small floors (a fake answers in a few tens of ms)."""
    monkeypatch.setattr(pool_module, "SLOW_FLOOR", 0.3)
    monkeypatch.setattr(pool_module, "RESCUE_FLOOR", 0.6)
    monkeypatch.setattr(pool_module, "PROBE_GAP", 0.05)


@pytest.fixture
def make_pool(monkeypatch):
    """A pool over "fast:1" (a FakeGrpcClient) and "slow:2" (a StalledClient); its log lines."""
    fakes: Dict[str, FakeGrpcClient] = {}
    pools: List[ServerPool] = []

    def make_client(url: str) -> TritonClient:
        # window 3 for 2 in flight: the fast fake answers each frame after its quiet time (30 ms), so
        # the slow server takes its share before the fast one is done
        fake = StalledClient(2, seed=2) if url.startswith("slow") else FakeGrpcClient(3, seed=1)
        fakes[url] = fake
        client = TritonClient(url, raw=fake)
        monkeypatch.setattr(client, "check", lambda: None)
        monkeypatch.setattr(client, "ready", lambda: True)
        return client

    def make(resend: bool, targets=(Target("fast", 1), Target("slow", 2))):
        logs: List[str] = []
        pool = ServerPool(list(targets), make_client, max_in_flight=2, request_timeout=WAIT, resend=resend,
                          log=logs.append)
        pools.append(pool)
        return pool, fakes, logs

    yield make
    for pool in pools:
        pool.close()
    for fake in fakes.values():
        fake.close()


def sent_to(fake: FakeGrpcClient) -> List[int]:
    with fake.cond:
        return [int(request_id) for _, request_id in fake.requests]


def status(pool: ServerPool, url: str):
    server = pool._servers.get(url)
    return server and server.status


def both_up(pool: ServerPool) -> bool:
    return all(status(pool, url) is ServerStatus.UP for url in ("fast:1", "slow:2"))


def stall_then_recover(pool: ServerPool, fakes, outcomes, before: int, gate: Gate) -> List[int]:
    """Wait until the slow server is marked, its frames were dealt with and every frame before the
    gate is out; then let it answer (late) and open the gate. The frames it held."""
    wait_until(lambda: status(pool, "slow:2") is ServerStatus.SLOW, WAIT, 0.01, "the server marked slow")
    slow = fakes["slow:2"]
    wait_until(lambda: len(outcomes) == before, WAIT, 0.01, "every frame before the gate out, around the slow server")
    held = sent_to(slow)
    assert held and not slow.delivered, "the stalled server has answered nothing yet"
    slow.go.set()  # it answers what it held, late
    wait_until(lambda: not pool._servers["slow:2"].holding, WAIT, 0.01, "the late answers taken")
    gate.open.set()
    return held


def stalled_run(make_pool, resend: bool, n: int, before: int):
    """A run of `n` frames over a fast and a slow server; the slow one stalls until every frame
    before the gate is out, then answers late. (pool, fakes, logs, outcomes, the frames it held)."""
    pool, fakes, logs = make_pool(resend=resend)
    gate = Gate(n, before, lambda: both_up(pool))
    thread, outcomes, errors = run_in_thread(pool, gate)
    held = stall_then_recover(pool, fakes, outcomes, before, gate)
    thread.join(WAIT)
    assert not thread.is_alive() and not errors, errors
    return pool, fakes, logs, outcomes, held


def test_frames_a_slow_server_holds_are_resent_and_the_first_answer_wins(make_pool, quick_rule):
    n = 80
    pool, fakes, logs, outcomes, held = stalled_run(make_pool, resend=True, n=n, before=20)

    assert [o.frame.index for o in outcomes] == list(range(n)), "every frame exactly once, in order"
    for k, outcome in enumerate(outcomes):
        check_answer(outcome, k)  # a frame never gets another frame's answer, nor fails
    assert pool.moved_slow == pool.stats.moved_slow == len(held) == 2, "its full window, resent once each"
    assert pool.moved == 0, "nothing broke"
    assert sorted(set(held) & set(sent_to(fakes["fast:1"]))) == sorted(held), "the fast server took them"
    assert {int(r) for _, r, kind in fakes["slow:2"].delivered if kind == "ok"} >= set(held), "their late answers came (dropped)"
    assert sum(s.frames for s in pool.servers()) == n, "each frame counted once, for the answer kept"
    assert not pool._answered and pool._outstanding == 0 and not pool._requeued
    assert sum("slow:2 is slow" in line for line in logs) == 1, logs
    assert sum("slow:2 is no longer slow" in line for line in logs) == 1, logs
    assert pool._servers["slow:2"].status is ServerStatus.UP
    probes_and_after = [i for i in sent_to(fakes["slow:2"]) if i not in held]
    assert probes_and_after, "once recovered it takes frames again"


def test_live_gives_up_a_slow_servers_frames_and_drops_their_late_answers(make_pool, quick_rule):
    n = 60
    pool, fakes, logs, outcomes, held = stalled_run(make_pool, resend=False, n=n, before=20)

    assert [o.frame.index for o in outcomes] == list(range(n)), "every frame exactly once, in order"
    given_up = [o.frame.index for o in outcomes if not o.ok]
    assert given_up == sorted(held), "the frames the slow server held failed; nothing else did"
    for outcome in outcomes:
        if outcome.ok:
            check_answer(outcome, outcome.frame.index)
        else:
            assert "slow:2" in outcome.error and "slow server" in outcome.error and not outcome.unavailable
    assert not set(held) & set(sent_to(fakes["fast:1"])), "live does not resend a stale frame"
    assert pool.moved_slow == len(held) == 2 and pool.moved == 0
    assert sum(s.frames for s in pool.servers()) == n - len(held), "the late answers were not counted"
    assert not pool._answered and pool._outstanding == 0
    assert any("slow:2 is no longer slow" in line for line in logs), logs


def test_one_server_is_never_slow(make_pool, quick_rule):
    pool, fakes, logs = make_pool(resend=True, targets=[Target("slow", 2)])
    thread, outcomes, errors = run_in_thread(pool, make_frames(6))
    wait_until(lambda: "slow:2" in fakes and sent_to(fakes["slow:2"]), WAIT, 0.01, "frames sent")
    time.sleep(1.0)  # the stall's length, past both floors: with nothing to compare with it only waits
    assert pool._servers["slow:2"].status is ServerStatus.UP and not outcomes
    fakes["slow:2"].go.set()
    thread.join(WAIT)
    assert not thread.is_alive() and not errors, errors
    assert [o.frame.index for o in outcomes] == list(range(6)) and all(o.ok for o in outcomes)
    assert pool.moved_slow == 0 and not any("slow" in line for line in logs)


def test_the_rule_scales_with_the_others_and_keeps_its_floors():
    assert pool_module.slow_limit(0.01) == pool_module.SLOW_FLOOR  # a fast model: noise never flaps
    assert pool_module.slow_limit(2.0) == pytest.approx(2.0 * pool_module.SLOWER)
    assert pool_module.rescue_deadline(0.01) == pool_module.RESCUE_FLOOR
    assert pool_module.rescue_deadline(2.0) == pool_module.slow_limit(2.0)
