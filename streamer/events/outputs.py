"""Where events go: the fan-out the event stages publish to, and the `--events FILE` JSONL output.

    EventStage (per camera) ─publish/counts─▶ Fanout ─▶ EventOutput (own thread, bounded queue) × N

`Fanout` hands each event and counts snapshot to every output and never blocks: an output's
`publish` only queues (the contract of `types.EventOutput`), and one that raises is logged once
and skipped from then on, so no output can stop the video. `statuses()` is what the report,
the status lines, the metrics and `/api/state` show of the outputs.

`JsonlEvents` (`--events FILE`) is the first output: one JSON line per event (`Event.to_json()`),
written by its own thread (the bounded queue every output shares, `queued.QueuedOutput`), whole
lines only, flushed at least once a second.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from ..errors import SinkError
from .queued import QueuedOutput, Say
from .types import Counts, Event, EventOutput, OutputState, OutputStatus

QUEUE_EVENTS = 10_000  # an output's queue: past it, events are dropped (counted)
FLUSH_S = 1.0  # the JSONL file is flushed at least this often while events come
DRAIN_S = 30.0  # at the end, what is still queued is written for at most this long (then counted failed)


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
        stamped = [event]

        def stamp(output: EventOutput) -> None:
            stamped[0] = output.stamp(stamped[0])

        self._each(stamp)
        self._each(lambda output: output.publish(stamped[0]))

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


class JsonlEvents(QueuedOutput):
    """`--events FILE`: one JSON line per event, written on its own thread (a `QueuedOutput`).

    The file is created at `__enter__` (its folder must exist) and written directly (a reader may
    follow it with `tail -f`): whole lines only, flushed at least every FLUSH_S seconds, whenever
    the queue is empty, and at the end. Events past QUEUE_EVENTS waiting are dropped and counted;
    an event counts as sent once flushed. A write error gives the output up (its status says why)
    without touching the video."""

    def __init__(self, path: Path, say: Say = lambda _line: None, queue_size: int = QUEUE_EVENTS):
        super().__init__(str(path), queue_size, say, drain_s=DRAIN_S)
        self.path = Path(path)
        self._file = None
        self._unflushed = 0  # events written to the file's buffer since its last flush
        self._flushed_at = 0.0

    def start(self) -> "JsonlEvents":
        try:
            self._file = open(self.path, "w", encoding="utf-8")
        except OSError as err:
            raise SinkError(f"cannot create the events file {self.path} ({err.strerror})") from err
        self._flushed_at = time.monotonic()
        self.set_state(OutputState.CONNECTED)
        super().start()
        return self

    # -- the output's thread -------------------------------------------------------------------
    def handle(self, event: Event) -> None:
        if self._file is None:  # given up on a write error
            self.count(failed=1)
            return
        try:
            self._file.write(json.dumps(event.to_json(), allow_nan=False) + "\n")
        except (OSError, ValueError) as err:
            self._give_up(err, failed=1)
            return
        self._unflushed += 1

    def idle(self) -> None:
        if self._unflushed and (not self.waiting() or time.monotonic() - self._flushed_at >= FLUSH_S):
            self._flush()

    def _flush(self) -> None:
        try:
            self._file.flush()
        except OSError as err:
            self._give_up(err)
            return
        self.count(sent=self._unflushed)
        self._unflushed, self._flushed_at = 0, time.monotonic()

    def _give_up(self, err: Exception, failed: int = 0) -> None:
        """A write error: the events not flushed yet (and `failed` more) are failed, the file closed."""
        self.count(failed=failed + self._unflushed)
        self._unflushed = 0
        file, self._file = self._file, None
        try:
            file.close()
        except OSError:
            pass
        reason = f"write failed: {getattr(err, 'strerror', None) or err}"
        self.set_state(OutputState.GIVEN_UP, reason)
        self.say(f"WARNING: {self.path}: {reason}; no more events are written there")

    def end(self) -> None:
        if self._file is None:
            return
        if self._unflushed:
            self._flush()
        if self._file is not None:
            try:
                self._file.close()
            except OSError as err:
                self._give_up(err)
            self._file = None
