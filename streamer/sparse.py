"""`--infer-every N` and `--infer-on motion` for files: only the frames the policy picks go to the model.

`SparseInference` wraps an `Inference` and yields one Outcome per frame, in frame order: the
inferred frames' own outcomes, and for the others `Outcome(frame, None, skipped=REASON)` with no
error (not inferred, not failed; the reason the policy gave), which the tracker stage then fills.
The policy (`policy.InferPolicy.decide`) sees every frame in order and is told which frame is the
last (one frame is read ahead), so the last frame is inferred too.
Frames the model does not need are released as soon as every earlier frame is, so the tracker
stage (which holds frames until the next inferred one, under its own memory cap) sees them at once.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from typing import Callable, Deque, Iterable, Iterator, List, Optional, Tuple

from .frames import Frame, Outcome
from .stages import Inference, ServerShare
from .states import InferenceState, SkipReason
from .triton import IDLE, IDLE_WAIT

Decide = Callable[[Frame, Optional[bool]], Optional[SkipReason]]  # (frame, is it the last) -> None: infer it
DEFAULT_MEMORY_CAP = 256 * 1024 * 1024  # bytes of frames read ahead of the model's answers
_END = object()


def with_last(frames: Iterable[Frame]) -> Iterator[Tuple[Frame, bool]]:
    """Each frame and whether it is the last one (one frame read ahead)."""
    held: Optional[Frame] = None
    for frame in frames:
        if held is not None:
            yield held, False
        held = frame
    if held is not None:
        yield held, True


class SparseInference:
    """An Inference that sends only the frames `decide` picks and passes the others through."""

    def __init__(self, inner: Inference, decide: Decide, ahead: int = 4, memory_cap: int = DEFAULT_MEMORY_CAP):
        self.inner = inner
        self.decide = decide
        self.ahead = ahead  # frames sent and not yet answered, at most (the stream's own window is smaller)
        self.memory_cap = memory_cap
        self.skipped = 0  # frames passed through without inference

    @property
    def state(self) -> InferenceState:
        return self.inner.state

    @property
    def reconnects(self) -> int:
        return self.inner.reconnects

    @property
    def moved(self) -> int:
        return self.inner.moved

    @property
    def moved_slow(self) -> int:
        return self.inner.moved_slow

    def abort(self) -> None:
        self.inner.abort()

    def close(self) -> None:
        self.inner.close()

    def compute_stats(self) -> Tuple[int, float]:
        return self.inner.compute_stats()

    def servers(self) -> List[ServerShare]:
        return self.inner.servers()

    def process(self, frames: Iterable[Frame]) -> Iterator[Outcome]:
        """Every frame's outcome in frame order. The picked frames go to the inner inference (run
        on its own thread, so a frame it does not need is released as soon as every earlier frame
        is); at most `ahead` picked frames wait for answers, and frames read ahead of the model
        stay under `memory_cap` bytes."""
        todo: "queue.Queue[Optional[Frame]]" = queue.Queue()
        answers: "queue.Queue[object]" = queue.Queue()

        def feed() -> Iterator[Frame]:
            while True:
                try:
                    item = todo.get(timeout=IDLE_WAIT)
                except queue.Empty:
                    yield IDLE  # nothing to send now: the stream releases answers meanwhile
                    continue
                if item is None:
                    return
                yield item

        def run() -> None:
            try:
                for outcome in self.inner.process(feed()):
                    answers.put(outcome)
            except BaseException as err:  # handed to the caller's thread
                answers.put(err)
            finally:
                answers.put(_END)

        worker = threading.Thread(target=run, name="sparse-inference", daemon=True)
        worker.start()
        pending: Deque[Tuple[Frame, Optional[SkipReason]]] = deque()  # frame order: (frame, None: sent, or why not)
        held = [0, 0]  # frames sent and not answered, bytes in pending

        def settle(wait: Callable[[], bool]) -> Iterator[Outcome]:
            """Release the head of `pending` while it is settled (a frame not sent, or answered);
            wait for an answer while `wait()` says so."""
            while pending:
                frame, skipped = pending[0]
                if skipped is None:
                    try:
                        item = answers.get(timeout=None if wait() else 0)
                    except queue.Empty:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    if item is _END:
                        raise RuntimeError("the inference ended before answering every frame sent")
                    held[0] -= 1
                    outcome = item
                else:
                    self.skipped += 1
                    outcome = Outcome(frame, None, skipped=skipped)
                pending.popleft()
                held[1] -= frame.image.nbytes
                yield outcome

        try:
            for frame, last in with_last(frames):
                skipped = self.decide(frame, last)
                pending.append((frame, skipped))
                held[1] += frame.image.nbytes
                if skipped is None:
                    held[0] += 1
                    todo.put(frame)
                yield from settle(lambda: held[0] > self.ahead or held[1] > self.memory_cap)
            todo.put(None)
            yield from settle(lambda: True)
        finally:
            todo.put(None)
            if pending:
                self.inner.abort()
            worker.join(timeout=30)
