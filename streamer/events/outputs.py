"""Where events go: the fan-out the event stages publish to, and the `--events FILE` JSONL output.

    EventStage (per camera) ─publish/counts─▶ Fanout ─▶ EventOutput (own thread, bounded queue) × N

`Fanout` hands each event and counts snapshot to every output and never blocks: an output's
`publish` only queues (the contract of `types.EventOutput`), and one that raises is logged once
and skipped from then on, so no output can stop the video. `statuses()` is what the report,
the status lines, the metrics and `/api/state` show of the outputs.

`JsonlEvents` (`--events FILE`) is the first output: one JSON line per event (`Event.to_json()`),
written by its own thread, whole lines only, flushed at least once a second.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from ..errors import SinkError
from .types import Counts, Event, EventOutput, OutputState, OutputStatus

Say = Callable[[str], None]

QUEUE_EVENTS = 10_000  # an output's queue: past it, events are dropped (counted)
FLUSH_S = 1.0  # the JSONL file is flushed at least this often while events come


class Fanout:
    """Every event and counts snapshot to every output (see the module docstring)."""

    def __init__(self, outputs: Sequence[EventOutput] = (), say: Say = lambda _line: None):
        self.outputs: List[EventOutput] = list(outputs)
        self.say = say
        self._broken: set = set()

    def __bool__(self) -> bool:
        return bool(self.outputs)

    def _each(self, call: Callable[[EventOutput], None]) -> None:
        for i, output in enumerate(self.outputs):
            if i in self._broken:
                continue
            try:
                call(output)
            except Exception as err:  # an output's bug never stops the video
                self._broken.add(i)
                self.say(f"WARNING: event output {i + 1} failed and is left out from now on ({err!r})")

    def publish(self, event: Event) -> None:
        """Every output names the files it will write for the event first (snapshot, clip), so
        each output sends the same event, paths included."""
        for i, output in enumerate(self.outputs):
            if i not in self._broken:
                try:
                    event = output.stamp(event)
                except Exception as err:  # an output's bug never stops the video
                    self._broken.add(i)
                    self.say(f"WARNING: event output {i + 1} failed and is left out from now on ({err!r})")
        self._each(lambda output: output.publish(event))

    def frame_sinks(self, camera: str, lossless: bool) -> List:
        """The Sinks that take `camera`'s drawn frames for the outputs that need the video (clips)."""
        found = [output.frame_sink(camera, lossless) for output in self.outputs]
        return [sink for sink in found if sink is not None]

    def counts(self, counts: Counts) -> None:
        self._each(lambda output: output.counts(counts))

    def statuses(self) -> List[OutputStatus]:
        found = []
        for output in self.outputs:
            try:
                found.append(output.status())
            except Exception as err:
                found.append(OutputStatus(name=type(output).__name__, state=OutputState.GIVEN_UP, reason=repr(err)))
        return found


def status_line(statuses: Sequence[OutputStatus]) -> Optional[str]:
    """`events: FILE connected, sent 12 | mqtt://... retrying (...)` (None: no outputs)."""
    if not statuses:
        return None
    parts = []
    for s in statuses:
        text = f"{s.name} {s.state}, sent {s.sent}"
        if s.dropped:
            text += f", dropped {s.dropped}"
        if s.failed:
            text += f", failed {s.failed}"
        if s.reason:
            text += f" ({s.reason})"
        parts.append(text)
    return "event outputs: " + " | ".join(parts)


_STOP = object()


class JsonlEvents:
    """`--events FILE`: one JSON line per event, written on its own thread.

    The file is created at `__enter__` (its folder must exist) and written directly (a reader may
    follow it with `tail -f`): whole lines only, flushed at least every FLUSH_S seconds and at the
    end. Events past QUEUE_EVENTS waiting are dropped and counted; a write error gives the
    output up (its status says why) without touching the video."""

    def __init__(self, path: Path, say: Say = lambda _line: None, queue_size: int = QUEUE_EVENTS):
        self.path = Path(path)
        self.say = say
        self._queue: "queue.Queue" = queue.Queue(queue_size)
        self._thread: Optional[threading.Thread] = None
        self._file = None
        self._state = OutputState.CONNECTING
        self._reason: Optional[str] = None
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self._warned = False

    def __enter__(self) -> "JsonlEvents":
        try:
            self._file = open(self.path, "w", encoding="utf-8")
        except OSError as err:
            raise SinkError(f"cannot create the events file {self.path} ({err.strerror})") from err
        self._state = OutputState.CONNECTED
        self._thread = threading.Thread(target=self._run, name="events-jsonl", daemon=True)
        self._thread.start()
        return self

    def publish(self, event: Event) -> None:
        if self._state is OutputState.GIVEN_UP:
            self.failed += 1
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            if not self._warned:
                self._warned = True
                self.say(f"WARNING: {self.path}: events come faster than they are written; some are dropped")

    def stamp(self, event: Event) -> Event:
        return event  # writes no files of its own

    def counts(self, counts: Counts) -> None:
        """Counts are in the run report; the file holds events only."""

    def frame_sink(self, camera: str, lossless: bool) -> None:
        return None

    def status(self) -> OutputStatus:
        return OutputStatus(name=str(self.path), state=self._state, sent=self.sent, dropped=self.dropped,
                            failed=self.failed, reason=self._reason)

    def _run(self) -> None:
        pending, flushed = 0, time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, flushed + FLUSH_S - time.monotonic()) if pending else None)
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            if item is not None:
                pending += self._write(item)
            if pending and (self._queue.empty() or time.monotonic() - flushed >= FLUSH_S):
                self._flush()
                pending, flushed = 0, time.monotonic()
        self._flush()

    def _write(self, event: Event) -> int:
        if self._file is None:
            self.failed += 1
            return 0
        try:
            self._file.write(json.dumps(event.to_json(), allow_nan=False) + "\n")
        except (OSError, ValueError) as err:
            self._give_up(err)
            self.failed += 1
            return 0
        self.sent += 1
        return 1

    def _flush(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
        except OSError as err:
            self._give_up(err)

    def _give_up(self, err: Exception) -> None:
        if self._state is not OutputState.GIVEN_UP:
            self._reason = f"write failed: {getattr(err, 'strerror', None) or err}"
            self._state = OutputState.GIVEN_UP
            self.say(f"WARNING: {self.path}: {self._reason}; no more events are written there")

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)  # blocks only while the queue is full: the writer is draining it
            self._thread.join()
            self._thread = None
        if self._file is not None:
            try:
                self._file.close()
            except OSError as err:
                self._give_up(err)
            self._file = None
        if self._state is not OutputState.GIVEN_UP:
            self._state = OutputState.CLOSED
