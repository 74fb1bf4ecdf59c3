"""Bounded hand-offs between threads: a frame queue and a keep-latest slot.

Files use back-pressure: put() blocks while the queue is full, so nothing is lost.
A live source must never wait: put_latest() drops the oldest item when full (and
returns it, so it is counted), and LatestSlot holds only the newest frame for
inference, counting each frame it replaces before inference took it.
close() says the producer is done (get() drains then returns None); cancel() says
the consumer is gone (a producer blocked in put() wakes and gets False), so a
reader blocked on a full queue can never hang the process.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Deque, Generic, Iterator, Optional, TypeVar

T = TypeVar("T")


class FrameQueue(Generic[T]):
    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._items: Deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._cancelled = False

    def put(self, item: T, timeout: Optional[float] = None) -> bool:
        """Block while full. True when queued; False when the consumer cancelled (or timeout)."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self._cancelled or len(self._items) < self.maxsize, timeout=timeout
            )
            if self._cancelled or not ok:
                return False
            if self._closed:
                raise RuntimeError("put() after close()")
            self._items.append(item)
            self._cond.notify_all()
            return True

    def put_latest(self, item: T) -> Optional[T]:
        """Never blocks: when full, the oldest item makes room and is returned."""
        with self._cond:
            if self._closed:
                raise RuntimeError("put_latest() after close()")
            dropped = self._items.popleft() if len(self._items) >= self.maxsize else None
            if not self._cancelled:
                self._items.append(item)
            self._cond.notify_all()
            return dropped

    def get(self, timeout: Optional[float] = None) -> Optional[T]:
        """The oldest item; None once closed and drained (or cancelled, or timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed or self._cancelled, timeout=timeout)
            if self._items and not self._cancelled:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            return None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._items.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self.get()
            if item is None:
                return
            yield item


class LatestSlot(Generic[T]):
    """Room for one item, the newest: put() never blocks and replaces an item not yet taken.

    `skipped` counts the items replaced (and the one left when closed) that get() never took.
    """

    def __init__(self, notify: Optional[Callable[[], None]] = None):
        self._item: Optional[T] = None
        self._cond = threading.Condition()
        self._closed = False
        self.skipped = 0
        self.notify = notify  # called after each put (e.g. to wake a scheduler watching several slots)

    def put(self, item: T) -> None:
        with self._cond:
            if self._closed:  # too late: it will never be taken
                self.skipped += 1
                return
            if self._item is not None:
                self.skipped += 1
            self._item = item
            self._cond.notify_all()
        if self.notify is not None:
            self.notify()

    def peek(self) -> Optional[T]:
        """The waiting item, without taking it (None: empty or closed)."""
        with self._cond:
            return None if self._closed else self._item

    def get(self, timeout: Optional[float] = None) -> Optional[T]:
        """Wait for an item and take it; None once closed (or on timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout=timeout)
            if self._closed:
                return None
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            if not self._closed and self._item is not None:
                self.skipped += 1
                self._item = None
            self._closed = True
            self._cond.notify_all()
