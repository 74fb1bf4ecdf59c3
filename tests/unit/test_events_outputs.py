"""Where events go: the fan-out (never stops on a broken output), the --events JSONL writer
(whole lines, flushed within a second, drops counted, a write error gives it up), and the
counts and outputs read by the metrics endpoint and the page's state."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from streamer.events.outputs import Fanout, JsonlEvents, status_line
from streamer.events.types import Counts, Event, EventKind, ObjectState, OutputState, OutputStatus
from streamer.metrics import CameraSample, MetricsServer
from streamer.stages import View
from streamer.web.state import camera_state, outputs_state

from .test_metrics import sample, scrape, value


def event(n: int = 1) -> Event:
    state = ObjectState(id=f"e{n}", camera="front", label="person", track_id=n, score=0.9, top_score=0.9,
                        box=(1, 2, 3, 4), current_zones=(), entered_zones=(), frame_index=n, source_time=None,
                        wall_time=None, start_time=None)
    return Event(EventKind.NEW, state, image=np.zeros((2, 2, 3), np.uint8))


def test_jsonl_writes_whole_lines_and_flushes_within_a_second(tmp_path):
    path = tmp_path / "events.jsonl"
    with JsonlEvents(path) as out:
        assert out.status().state is OutputState.CONNECTED
        out.publish(event(1))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not path.read_text():
            time.sleep(0.02)
        text = path.read_text()  # readable while the run goes on
        assert text.endswith("\n") and json.loads(text)["after"]["id"] == "e1"
        for n in range(2, 50):
            out.publish(event(n))
    lines = path.read_text().splitlines()
    assert [json.loads(line)["after"]["track_id"] for line in lines] == list(range(1, 50))
    status = out.status()
    assert (status.state, status.sent, status.dropped, status.failed) == (OutputState.CLOSED, 49, 0, 0)


def test_jsonl_drops_what_its_queue_cannot_hold_and_counts_it(tmp_path):
    said = []
    out = JsonlEvents(tmp_path / "e.jsonl", say=said.append, queue_size=3)
    for n in range(10):  # not entered: nothing drains the queue
        out.publish(event(n))
    assert out.status().dropped == 7 and len(said) == 1 and "dropped" in said[0]


def test_jsonl_gives_up_on_a_write_error_without_raising(tmp_path):
    said = []
    with JsonlEvents("/dev/full", say=said.append) as out:
        out.publish(event(1))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and out.status().state is not OutputState.GIVEN_UP:
            time.sleep(0.02)
        out.publish(event(2))
    status = out.status()
    assert status.state is OutputState.GIVEN_UP and status.failed >= 1 and "write failed" in status.reason
    assert any("no more events are written" in line for line in said)


class Broken:
    def stamp(self, event):
        return event

    def publish(self, event):
        raise RuntimeError("boom")

    def counts(self, counts):
        pass

    def status(self):
        return OutputStatus("broken", OutputState.CONNECTED)


class Keep:
    def __init__(self):
        self.got = []

    def stamp(self, event):
        return event

    def publish(self, event):
        self.got.append(event)

    def counts(self, counts):
        self.got.append(counts)

    def status(self):
        return OutputStatus("keep", OutputState.CONNECTED, sent=len(self.got))


def test_a_broken_output_is_left_out_and_the_others_still_get_everything():
    said, keep = [], Keep()
    fanout = Fanout([Broken(), keep], say=said.append)
    for n in range(3):
        fanout.publish(event(n))
    fanout.counts(Counts("front"))
    assert len(keep.got) == 4 and len(said) == 1 and "event output 1 failed" in said[0]
    assert [s.name for s in fanout.statuses()] == ["broken", "keep"]
    assert status_line(fanout.statuses()) == "event outputs: broken connected, sent 0 | keep connected, sent 4"
    assert status_line([]) is None and not Fanout()


COUNTS = Counts("front", lines={"door": {"in": {"person": 3}, "out": {"person": 1, "car": 2}}},
                zones={"yard": {"entered": {"person": 4}, "inside": {"person": 1}, "max_inside": {"person": 2}}})


def test_counts_and_outputs_on_the_metrics_endpoint():
    cams = [sample("front", counts=COUNTS), sample("back")]
    outputs = [OutputStatus("e.jsonl", OutputState.CONNECTED, sent=5, dropped=1),
               OutputStatus("mqtt://broker", OutputState.RETRYING, failed=2, reason="refused")]
    with MetricsServer(lambda: cams, port=0, outputs=lambda: outputs).start() as server:
        got = scrape(server.url)
    crossing = "streamer_line_crossings_total"
    assert value(got, crossing, camera="front", line="door", direction="in", label="person") == 3
    assert value(got, crossing, camera="front", line="door", direction="out", label="car") == 2
    assert value(got, "streamer_zone_objects", camera="front", zone="yard", label="person") == 1
    assert value(got, "streamer_zone_entries_total", camera="front", zone="yard", label="person") == 4
    assert not any(name.startswith("streamer_line") and ("camera", "back") in labels for name, labels in got)
    assert value(got, "streamer_event_output_up", output="e.jsonl") == 1
    assert value(got, "streamer_event_output_up", output="mqtt://broker") == 0
    assert value(got, "streamer_event_output_events_total", output="e.jsonl", result="dropped") == 1
    assert value(got, "streamer_event_output_events_total", output="mqtt://broker", result="failed") == 2


def test_the_page_state_has_counts_recent_events_and_outputs_masked():
    recent = ({"type": "new", "id": "x", "label": "person", "track_id": 3, "reasons": [], "crossings": [],
               "zones": [], "frame": 7, "time": 1.5},)
    secret = OutputStatus("mqtt://user:pw@broker/x", OutputState.RETRYING, reason="rtsp://a:b@c refused")
    views = [View("front", counts=COUNTS, events=recent, event_outputs=(secret,)),
             View("back", event_outputs=(secret,))]
    front = camera_state(views[0])
    assert front["counts"] == COUNTS.to_json() and front["events"] == list(recent)
    assert camera_state(views[1])["counts"] is None and camera_state(views[1])["events"] == []
    listed = outputs_state(views)
    assert len(listed) == 1 and "pw" not in json.dumps(listed) and listed[0]["state"] == "retrying"


@pytest.mark.parametrize("state, up", [(OutputState.CONNECTED, 1), (OutputState.CLOSED, 0)])
def test_output_up_follows_the_state(state, up):
    with MetricsServer(lambda: [sample()], port=0, outputs=lambda: [OutputStatus("o", state)]).start() as server:
        assert value(scrape(server.url), "streamer_event_output_up", output="o") == up
    assert isinstance(sample(), CameraSample)


def test_a_jsonl_writer_that_breaks_gives_up_and_the_end_of_the_run_never_waits(tmp_path):
    """An event its writer cannot encode (a bug: here a numpy integer in the JSON) gives the output
    up with the reason; events after it are counted, and closing it never blocks on a full queue."""
    import threading
    from dataclasses import replace

    said = []
    out = JsonlEvents(tmp_path / "e.jsonl", say=said.append, queue_size=3)
    bad = event(1)
    bad = replace(bad, after=replace(bad.after, frame_index=np.int64(1)))

    def run():
        with out:
            out.publish(bad)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and out.status().state is not OutputState.GIVEN_UP:
                time.sleep(0.02)
            for n in range(2, 10):
                out.publish(event(n))

    closing = threading.Thread(target=run, daemon=True)
    closing.start()
    closing.join(15)
    assert not closing.is_alive(), "the events output never closed"
    status = out.status()
    assert status.state is OutputState.GIVEN_UP and "TypeError" in status.reason
    assert status.sent == 0 and status.failed + status.dropped == 9
    assert any("TypeError" in line for line in said)


def test_the_jsonl_queue_holds_events_without_their_pictures(tmp_path):
    from .test_events_out_parts import alive_pictures

    out = JsonlEvents(tmp_path / "e.jsonl")  # not entered: nothing drains its queue
    assert alive_pictures(out.publish) == []
