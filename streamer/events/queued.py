"""The part every event output shares: a bounded queue, one thread, its counters and state.

    video path ──offer()──▶ bounded queue ──▶ the output's thread: handle(item)
                 (never waits)   (full: the item is dropped, counted, logged once)

`offer` never blocks the caller (a live camera's frame path) unless the output was made
`lossless` (a file run's clip encoder: a file is not real time, and a clip must hold every
frame). The thread takes items in order and calls `handle`; the output reports what happened
through `status()` (the run report, status lines, metrics and the web page read it).
`close()` gives the thread `drain_s` seconds to finish what is queued, then what is left
counts as failed.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import replace
from typing import Any, Callable, Deque, Optional

from .types import OutputState, OutputStatus

Say = Callable[[str], None]


class QueuedOutput:
    """Base of the event outputs: subclasses implement `handle(item)` (on the output's thread) and
    may override `begin()` / `end()` (on that thread, first and last) and `idle()` (called when
    the queue is empty, at least every `tick` seconds)."""

    tick = 0.5

    def __init__(self, name: str, capacity: int, log: Say, lossless: bool = False, drain_s: float = 5.0):
        if capacity < 1:
            raise ValueError("an output's queue holds at least one item")
        self.name = name
        self.capacity = capacity
        self.lossless = lossless
        self.drain_s = drain_s
        self._log = log
        self._items: Deque[Any] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._deadline: Optional[float] = None
        self._thread: Optional[threading.Thread] = None
        self._state = OutputState.CONNECTING
        self._reason: Optional[str] = None
        self._sent = 0
        self._dropped = 0
        self._failed = 0
        self._warned_full = False
        self._said: set = set()

    # -- the video path ----------------------------------------------------------------------
    def offer(self, item: Any) -> bool:
        """Queue `item` for the thread. False when the queue was full (the item is dropped and
        counted; lossless outputs wait instead)."""
        with self._cond:
            if self._closing:  # closed, or the thread stopped on an error
                self._dropped += 1
                return False
            while self.lossless and len(self._items) >= self.capacity and not self._closing \
                    and self._thread is not None and self._thread.is_alive():
                self._cond.wait(0.1)
            if len(self._items) >= self.capacity:
                self._dropped += 1
                warn = not self._warned_full
                self._warned_full = True
            else:
                self._items.append(item)
                self._cond.notify_all()
                return True
        if warn:
            self.say_once("full", f"WARNING: {self.name}: its queue of {self.capacity} is full; what does not fit "
                                  f"is dropped and counted (this is said once)")
        return False

    # the EventOutput interface (types.EventOutput): what most outputs do
    def stamp(self, event):
        return event

    def publish(self, event) -> None:
        """Queue the event without its picture (a whole frame): an output that sends pictures
        (snapshots, MQTT) overrides this and keeps them bounded its own way."""
        self.offer(event if event.image is None else replace(event, image=None))

    def counts(self, counts) -> None:
        pass

    def frame_sink(self, camera: str, lossless: bool):
        return None

    def wake(self) -> None:
        """Have the thread look again (new pending work that is not a queued item)."""
        with self._cond:
            self._cond.notify_all()

    # -- what the output says ----------------------------------------------------------------
    def waiting(self) -> int:
        """Items queued, not taken by the thread yet."""
        with self._cond:
            return len(self._items)

    def status(self) -> OutputStatus:
        with self._cond:
            return OutputStatus(name=self.name, state=self._state, sent=self._sent, dropped=self._dropped,
                                failed=self._failed, reason=self._reason)

    def set_state(self, state: OutputState, reason: Optional[str] = None) -> None:
        with self._cond:
            changed = (state, reason) != (self._state, self._reason)
            self._state, self._reason = state, reason
            self._cond.notify_all()
        if changed:
            self.on_state(state, reason)

    def on_state(self, state: OutputState, reason: Optional[str]) -> None:
        """A state change (subclasses log the ones worth a line)."""

    def count(self, sent: int = 0, failed: int = 0, dropped: int = 0) -> None:
        with self._cond:
            self._sent += sent
            self._failed += failed
            self._dropped += dropped

    def say(self, message: str) -> None:
        self._log(message)

    def say_once(self, key: str, message: str) -> None:
        """Log `message` the first time `key` comes up (a bounded set of keys)."""
        with self._cond:
            if key in self._said:
                return
            self._said.add(key)
        self._log(message)

    @property
    def closing(self) -> bool:
        return self._closing

    def past_deadline(self) -> bool:
        """True once close() has waited its drain time: whatever still waits is given up."""
        return self._deadline is not None and time.monotonic() >= self._deadline

    def wait(self, seconds: float, until: Callable[[], bool] = lambda: False) -> bool:
        """Sleep up to `seconds` on the output's thread, waking early when closing is past its
        deadline or `until()` holds (checked whenever the output is woken). True: `until()` held."""
        end = time.monotonic() + seconds
        with self._cond:
            while True:
                if until():
                    return True
                left = end - time.monotonic()
                if self._deadline is not None:
                    left = min(left, self._deadline - time.monotonic())
                if left <= 0:
                    return until()
                self._cond.wait(left)

    # -- the output's thread -------------------------------------------------------------------
    def begin(self) -> None:
        """First thing on the thread (connect, open)."""

    def end(self) -> None:
        """Last thing on the thread (say goodbye, close)."""

    def idle(self) -> None:
        """Work that is not a queued item (MQTT's retained counts): called after every item, and
        at least every `tick` seconds while nothing can be taken. Cheap when there is nothing to do."""

    def handle(self, item: Any) -> None:
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether the thread may take the next item now (MQTT: only while connected)."""
        return True

    def _next(self) -> Any:
        """The next item; None: stop; _AGAIN: nothing to take now (idle() ran meanwhile)."""
        with self._cond:
            if self._items and self.ready():
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            if self._closing and (not self._items or self.past_deadline()):
                return None
            timeout = self.tick
            if self._deadline is not None:
                timeout = max(0.0, min(timeout, self._deadline - time.monotonic()))
            self._cond.wait(timeout)
        self.idle()
        return _AGAIN

    def _run(self) -> None:
        try:
            self.begin()
            while True:
                item = self._next()
                if item is _AGAIN:
                    continue
                if item is None:
                    break
                try:
                    self.handle(item)
                except Exception:
                    self.count(failed=1)  # the item it broke on
                    raise
                self.idle()
        except Exception as err:  # an output's bug must not end the run: it says so and gives up
            with self._cond:
                self._closing = True
            self.set_state(OutputState.GIVEN_UP, f"internal error: {type(err).__name__}: {err}")
            self.say(f"ERROR: {self.name} stopped: {type(err).__name__}: {err}")
        finally:
            with self._cond:
                left = len(self._items)
                self._items.clear()
                self._failed += left
            try:
                self.end()
            finally:
                if self.status().state is not OutputState.GIVEN_UP:
                    self.set_state(OutputState.CLOSED, self._reason)

    def start(self) -> "QueuedOutput":
        self._thread = threading.Thread(target=self._run, name=f"output {self.name}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Let the thread finish what is queued (at most `drain_s` seconds), then stop it. Waits
        for the thread also when it stopped on its own (an error): its end() may still run."""
        with self._cond:
            if not self._closing:
                self._closing = True
                self._deadline = time.monotonic() + self.drain_s
                self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.drain_s + 10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


_AGAIN = object()  # _next(): nothing to hand out now, look again
