"""The event stage on box sequences: lines counted once per real crossing (both directions,
hysteresis, gaps, around the end), zones with inertia and loitering, new/update/end events,
flickers ignored, counts per class."""

from fractions import Fraction
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest

from streamer.events.config import regions
from streamer.events.stage import EventStage
from streamer.events.types import Counts, Direction, Event, EventKind, UpdateReason
from streamer.frames import Detections, Frame
from streamer.tracking.columns import tracked_detections, Made

NAMES = {1: "person", 3: "car"}
IMAGE = np.zeros((480, 640, 3), np.uint8)


class Collect:
    def __init__(self):
        self.events: List[Event] = []
        self.snapshots: List[Counts] = []

    def publish(self, event: Event) -> None:
        self.events.append(event)

    def counts(self, counts: Counts) -> None:
        self.snapshots.append(counts)

    def kinds(self, track_id: Optional[int] = None) -> List[str]:
        return [str(e.kind) for e in self.events if track_id is None or e.after.track_id == track_id]


def frame(i: int) -> Frame:
    return Frame(index=i, pts=i, time_base=Fraction(1, 25), wall_time=i / 25, image=IMAGE)


def box(cx: float, bottom: float, w: float = 40, h: float = 60) -> Tuple[float, float, float, float]:
    return (cx - w / 2, bottom - h, cx + w / 2, bottom)


def dets(objects: Dict[int, Tuple[int, Tuple[float, float, float, float]]], tracked: bool = False) -> Detections:
    """{track id: (label, box)}: the model's boxes (an answer), or boxes a tracker made."""
    items = sorted(objects.items())
    if tracked:
        return tracked_detections([Made(t, np.array(b), lab, 0.9, "flow", 0.0) for t, (lab, b) in items])
    return Detections(np.array([b for _, (_, b) in items], np.float32).reshape(-1, 4),
                      np.array([lab for _, (lab, _) in items], np.int64), np.full(len(items), 0.9, np.float32),
                      track_ids=np.array([t for t, _ in items], np.int64))


def stage_for(zones=None, lines=None, **kw) -> Tuple[EventStage, Collect]:
    sink = Collect()
    return EventStage("cam", regions(zones, lines, "cam"), NAMES.get, sink=sink, **kw), sink


def run(stage: EventStage, steps: Sequence[Optional[Dict]], tracked: Sequence[int] = ()) -> None:
    """Push one frame per step ({track id: (label, box)} or None: nothing drawn); frames in
    `tracked` carry boxes a tracker made (not an answer)."""
    for i, objects in enumerate(steps):
        d = None if objects is None else dets(objects, tracked=i in tracked)
        list(stage.push(frame(i), d))
    list(stage.flush())


DOOR = {"door": {"points": [[320, 0], [320, 480]]}}  # drawn top to bottom: `in` is right to left


def path(xs: Sequence[float], label: int = 1, track: int = 7, y: float = 300) -> List[Dict]:
    return [{track: (label, box(x, y))} for x in xs]


def line_counts(stage: EventStage) -> Dict:
    return stage.counts().to_json()["lines"]["door"]


def test_crossings_in_both_directions_count_per_class():
    stage, sink = stage_for(lines=DOOR)
    steps = [{**a, **b} for a, b in zip(path(range(200, 460, 20), label=1, track=1),
                                        path(range(460, 200, -20), label=3, track=2, y=200))]
    run(stage, steps)
    assert line_counts(stage) == {"in": {"car": 1}, "out": {"person": 1}}
    crossed = [e for e in sink.events if UpdateReason.CROSSED_LINE in e.reasons]
    assert [(e.after.track_id, e.crossings[0].direction) for e in crossed] == [(1, Direction.OUT), (2, Direction.IN)]
    assert sink.kinds(1) == ["new", "update", "end"] and sink.kinds(2) == ["new", "update", "end"]


def test_in_back_out_and_in_again_counts_in_two_out_one():
    xs = list(range(400, 240, -20)) + list(range(240, 400, 20)) + list(range(400, 240, -20))
    stage, _ = stage_for(lines=DOOR)
    run(stage, path(xs))
    assert line_counts(stage) == {"in": {"person": 2}, "out": {"person": 1}}


def test_a_box_jittering_across_the_line_or_wobbling_on_it_counts_once_at_most():
    rng = np.random.default_rng(1)
    jitter = [320 + rng.uniform(-3, 3) for _ in range(40)]  # margin: 10% of the box (about 5 px)
    stage, _ = stage_for(lines=DOOR)
    run(stage, path([300] + jitter))
    assert line_counts(stage) == {"in": {}, "out": {}}
    # Wobbling on the line after crossing it: one crossing.
    stage, _ = stage_for(lines=DOOR)
    run(stage, path([260, 280, 300, 318, 324, 317, 323, 316, 324, 340, 360]))
    assert line_counts(stage) == {"in": {}, "out": {"person": 1}}
    # Stepping over and straight back before getting clear on the other side: nothing.
    stage, _ = stage_for(lines=DOOR)
    run(stage, path([280, 300, 322, 300, 280]))
    assert line_counts(stage) == {"in": {}, "out": {}}


def test_a_hidden_object_counts_when_it_reappears_on_the_other_side():
    steps = path([240, 260, 280]) + [{}] * 6 + path([380, 400, 420])
    stage, _ = stage_for(lines=DOOR)
    run(stage, steps)
    assert line_counts(stage) == {"in": {}, "out": {"person": 1}}


def test_passing_around_the_end_of_the_segment_is_not_a_crossing():
    short = {"door": {"points": [[320, 200], [320, 480]]}}
    stage, _ = stage_for(lines=short)
    run(stage, path(range(200, 460, 20), y=150))  # above the segment's top end
    assert line_counts(stage) == {"in": {}, "out": {}}


def test_a_flicker_seen_in_one_answer_makes_no_event_and_no_count():
    stage, sink = stage_for(lines=DOOR)
    steps = [{5: (1, box(300, 300))}] + [{5: (1, box(340, 300))}] * 3 + [{}] * 60
    run(stage, steps, tracked=[1, 2, 3])  # the model saw it once; the tracker carried it
    assert sink.events == [] and line_counts(stage) == {"in": {}, "out": {}}


def test_what_an_object_did_before_it_was_confirmed_is_counted_then():
    stage, sink = stage_for(lines=DOOR)
    steps = path([300, 340, 360])
    run(stage, steps, tracked=[1])  # answers on frames 0 and 2: confirmed at 2, crossed at 1
    assert line_counts(stage) == {"in": {}, "out": {"person": 1}}
    assert sink.kinds() == ["new", "update", "end"]
    assert sink.events[1].crossings[0].line == "door" and sink.events[1].after.frame_index == 2


def test_zones_with_inertia_max_inside_and_loitering():
    zone = {"yard": {"points": [[300, 200], [500, 200], [500, 400], [300, 400]], "min_frames": 3, "loiter_s": 0.4}}
    stage, sink = stage_for(zones=zone)
    a = [{1: (1, box(x, 300))} for x in (250, 280, 350, 360, 370)] + [{1: (1, box(380, 300))}] * 12
    b = [{2: (1, box(400, 300))}] * 2 + [{2: (1, box(200, 300))}] * 15  # 2 frames inside: never entered
    steps = [{**x, **y} for x, y in zip(a, b)]
    steps += [{1: (1, box(600, 300))}] * 4  # leaves (3 frames outside)
    for i, objects in enumerate(steps):
        list(stage.push(frame(i), dets(objects)))
        if i == 10:
            assert stage.counts().zones["yard"]["inside"] == {"person": 1}
    counts = stage.counts().to_json()["zones"]["yard"]
    assert counts == {"entered": {"person": 1}, "inside": {}, "max_inside": {"person": 1}}
    reasons = [(e.after.track_id, [str(r) for r in e.reasons]) for e in sink.events if e.kind is EventKind.UPDATE]
    assert reasons == [(1, ["entered_zone"]), (1, ["loitering"]), (1, ["left_zone"])]
    entered = next(e for e in sink.events if UpdateReason.ENTERED_ZONE in e.reasons)
    assert entered.after.frame_index == 4 and entered.after.current_zones == ("yard",)
    assert entered.before.current_zones == ()
    left = next(e for e in sink.events if UpdateReason.LEFT_ZONE in e.reasons)
    assert left.after.current_zones == () and left.after.entered_zones == ("yard",)


def test_classes_limit_what_a_line_counts():
    stage, _ = stage_for(lines={"door": {"points": [[320, 0], [320, 480]], "classes": ["car"]}})
    steps = [{**a, **b} for a, b in zip(path(range(200, 460, 20), label=1, track=1),
                                        path(range(200, 460, 20), label=3, track=2, y=200))]
    run(stage, steps)
    assert line_counts(stage) == {"in": {}, "out": {"car": 1}}


def test_an_object_ends_after_the_trackers_limit_of_missed_answers_and_time():
    stage, sink = stage_for(lines=DOOR, end_misses=3, end_s=0.5)
    steps = path([100, 110]) + [{}] * 20
    for i, objects in enumerate(steps):
        list(stage.push(frame(i), dets(objects)))
        if i == 5:
            assert sink.kinds() == ["new"]  # 4 answers missed, but 0.16 s: not yet
    assert sink.kinds() == ["new", "end"]
    end = sink.events[-1]
    assert end.after.end_time == pytest.approx(1 / 25) and end.after.frame_index == 1
    assert end.before is sink.events[0].after


def test_event_fields():
    stage, sink = stage_for(lines=DOOR)
    run(stage, path([300, 310, 340]))
    new, update, end = sink.events
    assert new.before is None and new.image is IMAGE and new.after.label == "person"
    assert new.after.id == update.after.id == end.after.id and new.after.id.endswith("-cam-7")
    assert new.after.source_time == pytest.approx(1 / 25) and new.after.wall_time is None
    assert new.after.start_time == 0.0 and update.crossings[0].to_json() == {"line": "door", "direction": "out",
                                                                           "label": "person"}
    doc = update.to_json()
    assert doc["type"] == "update" and doc["reasons"] == ["crossed_line"] and doc["after"]["box"] == [320, 240, 360, 300]
    assert stage.recent()[-1]["type"] == "end"


def test_live_answers_confirm_and_ids_only_the_drawn_boxes_move():
    stage, sink = stage_for(lines=DOOR, live=True, min_frames=3)
    for i, x in enumerate(range(260, 400, 10)):
        list(stage.push(frame(i), dets({4: (1, box(x, 300))}, tracked=True)))
        if i in (2, 6):  # the model's answers (for a frame shown earlier)
            stage.answer(frame(i - 1), dets({4: (1, box(x - 10, 300))}))
    assert sink.kinds() == ["new", "update"] and line_counts(stage) == {"in": {}, "out": {"person": 1}}
    assert sink.events[0].after.wall_time is not None
    stage.reset()  # a reconnect: the track is gone
    assert sink.kinds() == ["new", "update", "end"]


def scored(track: int, label: int, b, score: float) -> Detections:
    return Detections(np.array([b], np.float32), np.array([label], np.int64), np.array([score], np.float32),
                      track_ids=np.array([track], np.int64))


def test_a_better_snapshot_is_a_frame_that_scored_better_never_a_worse_one():
    """The top score reached while snapshots were rate-limited does not make a later, lower-scored
    frame the 'better' snapshot: an update's image is a frame whose own score beat the last one."""
    stage, sink = stage_for(lines=DOOR)
    scores = {5: 0.95, 40: 0.9}  # 0.95 comes 0.16 s after the first snapshot: too soon for another
    for i in range(60):
        list(stage.push(frame(i), scored(3, 1, box(100, 300), scores.get(i, 0.6))))
    better = [e for e in sink.events if UpdateReason.BETTER_SNAPSHOT in e.reasons]
    assert [(e.after.frame_index, round(e.after.score, 2)) for e in better] == [(40, 0.9)]
    assert all(e.image is not None for e in better)


def test_live_events_made_by_an_answer_show_the_answers_box_on_its_frame():
    """Live, an object is confirmed by an answer for a frame shown earlier: its `new` event (and its
    snapshot's image) is that frame, so its box is the answer's, not the newest drawn one."""
    stage, sink = stage_for(lines=DOOR, live=True, min_frames=3)
    for i, x in enumerate(range(100, 200, 10)):
        list(stage.push(frame(i), dets({4: (1, box(x, 300))}, tracked=True)))
        if i in (2, 6):  # answers for the frame 2 before: the object was 20 px further back then
            stage.answer(frame(i - 2), dets({4: (1, box(x - 20, 300))}))
    new = sink.events[0]
    assert new.kind is EventKind.NEW and new.after.frame_index == 4
    assert new.after.box == pytest.approx(box(140, 300))  # where the answer saw it on frame 4 (drawn: 160)


def test_an_object_no_longer_seen_does_not_keep_its_last_pictures_alive():
    """An object missed by a few answers is kept (it may come back), but not the picture it was
    last seen on: its end event needs that frame's index and times only."""
    import gc
    import weakref

    stage = EventStage("cam", regions(None, DOOR, "cam"), NAMES.get)  # no sink keeping events' images
    pictures = []
    for i in range(12):
        image = np.zeros((480, 640, 3), np.uint8)
        pictures.append(weakref.ref(image))
        objects = {9: (1, box(100 + i, 300))} if i < 6 else {}
        list(stage.push(Frame(index=i, pts=i, time_base=Fraction(1, 25), wall_time=i / 25, image=image),
                        dets(objects)))
        del image
    gc.collect()
    assert [i for i, picture in enumerate(pictures) if picture() is not None] == []
    list(stage.flush())
