"""A bounded frame queue between the capture thread and the consumer.

Files use back-pressure: put() blocks while the queue is full, so nothing is lost.
close() says the producer is done (get() drains then returns None); cancel() says
the consumer is gone (a producer blocked in put() wakes and gets False), so a
reader blocked on a full queue can never hang the process.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Deque, Generic, Iterator, Optional, TypeVar

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
