"""Ctrl-C / SIGTERM never cut a frame's write in half (a real signal sent to this process)."""

from __future__ import annotations

import signal

import numpy as np
import pytest

from streamer import interrupts
from streamer.frames import Detections, Frame, Outcome
from streamer.pipeline import FilePipeline
from streamer.stages import PassStage


def deliver(sig: int) -> None:
    signal.raise_signal(sig)  # in this (the main) thread: its Python handler has run when this returns


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_outside_critical_raises_at_once(sig):
    with interrupts.installed():
        with pytest.raises(KeyboardInterrupt):
            deliver(sig)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_inside_critical_waits_for_the_block_to_end(sig):
    done = []
    with interrupts.installed():
        with pytest.raises(KeyboardInterrupt):
            with interrupts.critical():
                deliver(sig)
                done.append("rest of the block")
        with interrupts.critical():  # nothing left pending
            done.append("next block")
    assert done == ["rest of the block", "next block"]


def test_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with interrupts.installed():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


class Frames:
    problem = None

    def frames(self):
        for i in range(10):
            yield Frame(i, i, None, 0.0, np.zeros((4, 4, 3), np.uint8))


class Inferred:
    reconnects = 0

    def process(self, frames):
        for frame in frames:
            yield Outcome(frame, Detections.empty())


class SignalsMidWrite:
    """A sink that is signalled half-way through writing frame 2."""

    def __init__(self):
        self.parts = []

    def write(self, frame, image, detections):
        self.parts.append((frame.index, "encoded"))
        if frame.index == 2:
            deliver(signal.SIGINT)
        self.parts.append((frame.index, "muxed"))


def test_pipeline_finishes_the_frame_being_written_then_stops():
    sink = SignalsMidWrite()
    pipeline = FilePipeline(source=Frames(), inference=Inferred(), stages=PassStage(), annotators=[], sinks=[sink])
    with interrupts.installed():
        stats = pipeline.run()
    assert stats.interrupted
    assert stats.written == 3
    assert sink.parts == [(k, part) for k in range(3) for part in ("encoded", "muxed")]
