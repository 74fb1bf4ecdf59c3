"""streamer.frame_queue.FrameQueue: FIFO, back-pressure, close/drain, cancel wakes producers."""

from __future__ import annotations

import threading

import pytest

from streamer.frame_queue import FrameQueue

JOIN = 5.0  # generous bound for every thread join / wait


def start(target, *args) -> threading.Thread:
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def test_fifo_order():
    q: FrameQueue[int] = FrameQueue(10)
    for i in range(10):
        assert q.put(i) is True
    assert len(q) == 10
    assert [q.get() for _ in range(10)] == list(range(10))
    assert len(q) == 0


@pytest.mark.parametrize("maxsize", [0, -1])
def test_maxsize_below_one_raises(maxsize):
    with pytest.raises(ValueError):
        FrameQueue(maxsize)


def test_put_blocks_when_full_until_get_frees_a_slot():
    q: FrameQueue[int] = FrameQueue(2)
    assert q.put(0) and q.put(1)
    about_to_put = threading.Event()
    done = threading.Event()
    result = {}

    def producer():
        about_to_put.set()
        result["ok"] = q.put(2)
        done.set()

    t = start(producer)
    assert about_to_put.wait(JOIN)
    # Still full: the producer cannot have finished. (A short bounded wait; the
    # real check is that it completes only after get() below.)
    assert not done.wait(0.2)
    assert len(q) == 2
    assert q.get() == 0
    assert done.wait(JOIN), "put() did not wake after get() freed a slot"
    t.join(JOIN)
    assert not t.is_alive()
    assert result["ok"] is True
    assert [q.get(), q.get()] == [1, 2]


def test_put_timeout_when_full_returns_false():
    q: FrameQueue[int] = FrameQueue(1)
    q.put(0)
    assert q.put(1, timeout=0.05) is False
    assert len(q) == 1


def test_get_timeout_on_empty_returns_none():
    q: FrameQueue[int] = FrameQueue(1)
    assert q.get(timeout=0.05) is None


def test_close_then_get_drains_then_returns_none():
    q: FrameQueue[str] = FrameQueue(5)
    for item in "abc":
        q.put(item)
    q.close()
    assert [q.get(), q.get(), q.get()] == ["a", "b", "c"]
    assert q.get() is None
    assert q.get() is None  # stays closed


def test_close_wakes_a_blocked_consumer():
    q: FrameQueue[int] = FrameQueue(2)
    waiting = threading.Event()
    got = []

    def consumer():
        waiting.set()
        got.append(q.get())

    t = start(consumer)
    assert waiting.wait(JOIN)
    q.close()
    t.join(JOIN)
    assert not t.is_alive(), "get() did not wake on close()"
    assert got == [None]


def test_put_after_close_raises():
    q: FrameQueue[int] = FrameQueue(2)
    q.close()
    with pytest.raises(RuntimeError):
        q.put(1)


def test_cancel_wakes_blocked_producer_and_drops_items():
    q: FrameQueue[int] = FrameQueue(1)
    q.put(0)
    about_to_put = threading.Event()
    result = {}

    def producer():
        about_to_put.set()
        result["ok"] = q.put(1)

    t = start(producer)
    assert about_to_put.wait(JOIN)
    q.cancel()
    t.join(JOIN)
    assert not t.is_alive(), "producer blocked in put() did not wake on cancel()"
    assert result["ok"] is False
    assert len(q) == 0
    assert q.get() is None
    assert q.put(2) is False  # stays cancelled


def test_cancel_wakes_many_blocked_producers():
    q: FrameQueue[int] = FrameQueue(1)
    q.put(-1)
    results = []
    lock = threading.Lock()
    started = threading.Barrier(5, timeout=JOIN)

    def producer(i):
        started.wait()
        ok = q.put(i)
        with lock:
            results.append(ok)

    threads = [start(producer, i) for i in range(4)]
    started.wait()
    q.cancel()
    for t in threads:
        t.join(JOIN)
        assert not t.is_alive()
    assert results == [False] * 4


def test_iteration_stops_after_close():
    q: FrameQueue[int] = FrameQueue(3)

    def producer():
        for i in range(20):
            assert q.put(i)
        q.close()

    t = start(producer)
    items = list(q)  # blocks until close; the producer is bounded by back-pressure
    t.join(JOIN)
    assert not t.is_alive()
    assert items == list(range(20))


def test_producer_consumer_threads_lossless_in_order():
    q: FrameQueue[int] = FrameQueue(2)
    n = 500
    out = []

    def consumer():
        for item in q:
            out.append(item)

    t = start(consumer)
    for i in range(n):
        assert q.put(i, timeout=JOIN)
    q.close()
    t.join(JOIN)
    assert not t.is_alive()
    assert out == list(range(n))
