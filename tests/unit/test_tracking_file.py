"""FileTracker (files, --infer-every N) on synthetic clips: sprites on known paths, their true
boxes fed as the model's detections on the inferred frames (0, N, 2N, ..., each cut, the last)."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest

from streamer.frames import Detections, Frame
from streamer.tracking import AGE, ESTIMATE, FLOW, INTERPOLATED, PREDICTED, TRACKED, FileTracker, is_tracked

from ..tracking_clips import (crossing, cut, id_switches, leaving, occluded, render, run_file, straight,
                              turning)

EVERY = 5


def test_every_frame_comes_out_once_in_order_and_the_models_boxes_are_untouched():
    for scene in (straight(), turning(), crossing(), leaving(), occluded(), cut()):
        run = run_file(scene, EVERY)
        assert [f.index for f, _ in run.released] == list(range(scene.frames))
        for frame, released in run.released:
            assert released is not None
            if frame.index in run.inferred:  # fidelity: the same rows, order and values, ids added
                given = run.truth.detections(frame.index)
                assert np.array_equal(released.boxes, given.boxes)
                assert np.array_equal(released.labels, given.labels)
                assert np.array_equal(released.scores, given.scores)
                assert released.track_ids is not None and (released.track_ids > 0).all()
                assert not is_tracked(released)
            else:
                assert is_tracked(released) and released.data[TRACKED].all()


@pytest.mark.parametrize("scene", [straight, turning])
def test_boxes_between_inferences_follow_straight_and_turning_paths(scene):
    run = run_file(scene(), EVERY)
    assert run.mean_iou() >= 0.9  # measured 0.995 (straight), 0.985 (turning)
    for key in run.truth.keys(0):
        assert id_switches(run.ids(key)) == 0
        assert None not in run.ids(key)  # a box on every frame


def test_with_jittery_detections_the_boxes_stay_close():
    run = run_file(turning(), EVERY, jitter=0.03)
    assert run.mean_iou() >= 0.85  # measured 0.93


def test_flat_sprites_are_carried_by_the_kalman_model_where_flow_finds_nothing():
    scene = straight()
    scene.flat = True
    run = run_file(scene, EVERY)
    assert run.mean_iou() >= 0.9
    assert all(id_switches(run.ids(k)) == 0 for k in run.truth.keys(0))


def test_crossing_sprites_of_one_class_switch_at_most_once():
    run = run_file(crossing(), EVERY)
    assert id_switches(run.ids("a")) <= 1 and id_switches(run.ids("b")) <= 1
    assert run.mean_iou() >= 0.9


def test_a_sprite_that_leaves_is_not_drawn_outside_and_keeps_one_id_when_back():
    run = run_file(leaving(), EVERY)
    assert id_switches(run.ids("b")) == 0
    gone = [i for i in range(run.scene.frames) if "a" not in run.truth.boxes[i]]
    assert gone
    for i in gone:  # no green box while it is away, beyond the carry limit
        drawn = run.released[i][1]
        last_seen = max(j for j in run.inferred if j < i and "a" in run.truth.boxes[j])
        if i - last_seen > EVERY:
            assert 2 not in drawn.labels
    back = [i for i in range(gone[-1] + 1, run.scene.frames)]
    assert id_switches([run.ids("a")[i] for i in back]) == 0


def test_an_occluded_sprite_keeps_its_id_and_is_carried_at_most_n_frames():
    run = run_file(occluded(), EVERY)
    ids = run.ids("a")
    assert id_switches(ids) == 0
    hidden = [i for i in range(run.scene.frames) if "a" not in run.truth.boxes[i]]
    last_seen = max(j for j in run.inferred if j < hidden[0])
    for i in hidden:
        if i - last_seen > EVERY:
            assert len(run.released[i][1]) == 0


def test_no_box_crosses_a_cut():
    scene = cut()
    at = scene.cuts[0]
    run = run_file(scene, EVERY)
    before = {int(t) for _, d in run.released[:at] for t in d.track_ids}
    after = {int(t) for _, d in run.released[at:] for t in d.track_ids}
    assert before and after and not before & after
    for i in range(at):  # the frames before the cut: only boxes of the first shot, where they were
        for value, _ in run_file_matches(run, i).values():
            assert value > 0.8
    assert all(id_switches(run.ids(k)[at:]) == 0 for k in run.truth.keys(at))


def run_file_matches(run, index):
    from ..tracking_clips import best_match
    return best_match(run.truth.boxes[index], run.released[index][1])


def test_made_boxes_keep_the_tracks_class_and_score_and_say_how_and_how_old():
    frames, truth = render(straight(11))
    stage = FileTracker(EVERY)
    given = truth.detections(0, score=0.77)
    out = list(stage.push(frames[0], given))
    for frame in frames[1:5]:
        out += list(stage.push(frame, None))
    assert len(out) == 1  # held until the next inferred frame
    out += list(stage.push(frames[5], truth.detections(5, score=0.9)))
    assert [f.index for f, _ in out] == list(range(6))
    made = out[2][1]
    assert sorted(made.labels) == sorted(given.labels) and np.allclose(made.scores, 0.77)
    assert set(made.data[ESTIMATE]) == {INTERPOLATED}
    assert made.data[AGE] == pytest.approx(np.full(len(made), 2 / 25))


def test_flush_carries_the_frames_after_the_last_inferred_one_at_most_n_frames():
    frames, truth = render(straight(20))
    stage = FileTracker(EVERY)
    out = list(stage.push(frames[0], truth.detections(0)))
    for frame in frames[1:12]:  # the run stops without inferring again (Ctrl-C)
        out += list(stage.push(frame, None))
    assert len(out) == 1
    out += list(stage.flush())
    assert [f.index for f, _ in out] == list(range(12))
    for frame, made in out[1:]:
        assert len(made) == (2 if frame.index <= EVERY else 0)
        assert set(made.data[ESTIMATE]) <= {FLOW}
    assert list(stage.flush()) == []


def test_a_track_is_never_drawn_before_it_is_first_seen():
    frames, truth = render(straight(16))
    stage = FileTracker(EVERY)
    out = []
    for frame in frames:
        detections = None
        if frame.index in (0, 5, 10, 15):
            detections = truth.detections(frame.index)
            if frame.index < 10:  # sprite b is detected only from frame 10 on
                keep = detections.labels != 2
                detections = detections[keep]
        out += list(stage.push(frame, detections))
    by_frame = {f.index: d for f, d in out}
    for i in range(10):
        assert 2 not in by_frame[i].labels
    assert 2 in by_frame[10].labels


def test_a_failed_inference_widens_the_gap_and_matched_tracks_are_still_interpolated():
    scene = straight()
    frames, truth = render(scene)
    stage = FileTracker(EVERY)
    out = []
    for frame in frames[:21]:
        detections = truth.detections(frame.index) if frame.index in (0, 5, 15, 20) else None  # 10 failed
        out += list(stage.push(frame, detections))
    between = [d for f, d in out if 5 < f.index < 15]
    assert all(len(d) == 2 and set(d.data[ESTIMATE]) == {INTERPOLATED} for d in between)


def test_the_memory_cap_releases_early_with_carried_boxes():
    frames, truth = render(straight(31))
    frame_bytes = frames[0].image.nbytes
    stage = FileTracker(30, memory_cap=3 * frame_bytes)
    out = []
    for frame in frames:
        detections = truth.detections(frame.index) if frame.index in (0, 30) else None
        out += list(stage.push(frame, detections))
        assert stage.held_bytes <= 3 * frame_bytes
    assert [f.index for f, _ in out] == list(range(31))
    assert stage.early == 26 and stage.peak_bytes <= 3 * frame_bytes
    estimates = [set(d.data[ESTIMATE]) for f, d in out if 0 < f.index < 30]
    assert all(e == {FLOW} for e in estimates[:26]) and all(e == {INTERPOLATED} for e in estimates[26:])
    run = run_file(straight(31), 30, stage=FileTracker(30, memory_cap=3 * frame_bytes))
    assert run.mean_iou() >= 0.9  # flow alone carries well on texture


def test_a_4k_clip_at_n_30_holds_no_more_than_the_default_cap():
    image = np.zeros((2160, 3840, 3), np.uint8)
    image[::7, ::5] = 200  # some texture; every frame shares this one array
    stage = FileTracker(30)
    box = Detections(np.array([[1000, 800, 1400, 1200]]), np.array([1]), np.array([0.9]))
    released = 0
    for i in range(31):
        frame = Frame(i, i, Fraction(1, 25), i / 25, image)
        released += len(list(stage.push(frame, box if i in (0, 30) else None)))
        assert stage.held_bytes <= stage.memory_cap
    assert released == 31 and stage.peak_bytes <= 256 * 1024 * 1024 and stage.early > 0


def test_frames_without_a_timestamp_use_their_index():
    frames, truth = render(straight(6))
    frames = [replace(f, pts=None, time_base=None) for f in frames]
    stage = FileTracker(EVERY)
    out = list(stage.push(frames[0], truth.detections(0)))
    for frame in frames[1:5]:
        out += list(stage.push(frame, None))
    out += list(stage.push(frames[5], truth.detections(5)))
    assert len(out) == 6 and all(len(d) == 2 for _, d in out)


def test_answer_passes_through_and_infer_every_is_checked():
    stage = FileTracker(EVERY)
    given = Detections.empty()
    assert stage.answer(None, given) is given
    with pytest.raises(ValueError):
        FileTracker(0)


def test_with_every_frame_inferred_ids_come_at_once_and_a_failed_frame_is_carried():
    frames, truth = render(straight(12))
    stage = FileTracker(1)
    out = []
    for frame in frames:
        out += list(stage.push(frame, None if frame.index == 6 else truth.detections(frame.index)))
    assert [f.index for f, _ in out] == list(range(12))
    assert all(list(d.track_ids) == [1, 2] for _, d in out)
    assert set(out[6][1].data[ESTIMATE]) == {INTERPOLATED}
    out = list(stage.push(replace(frames[11], index=12), None))  # after the last answer: Kalman only
    assert out == [] and set(next(iter(stage.flush()))[1].data[ESTIMATE]) == {PREDICTED}
