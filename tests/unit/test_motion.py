"""The motion detector and the inference policy on camera-like footage written as H.264 with PyAV
and read back through the file source (tests/motion_clips.py): sensor noise and compression
flicker are not motion, an exposure step is a change of brightness (at most one inference), a
masked swaying tree is ignored, a person crossing is motion."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from typing import List

import numpy as np
import pytest

from streamer.frames import Frame
from streamer.motion import SPREAD_MIN, MotionDetector, parse_polygon, rasterise
from streamer.policy import InferPolicy
from streamer.states import InferOn, SkipReason
from streamer.tracking import media_time

from .. import motion_clips as M


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """name -> (Footage, decoded frames), each written once for the module."""
    root = tmp_path_factory.mktemp("motion_footage")
    cache = {}

    def get(name: str):
        if name not in cache:
            scene = M.SCENES[name]()
            cache[name] = (scene, M.decoded(M.write(root / f"{name}.mp4", scene)))
        return cache[name]

    return get


def fresh(frames: List[Frame]) -> List[Frame]:
    """The frames without their shared grey copies (each detector starts from the pictures)."""
    return [replace(f) for f in frames]


def detect(frames: List[Frame], **options):
    detector = MotionDetector(**options)
    return [detector.detect(f, media_time(f)) for f in fresh(frames)], detector


def inferred(frames: List[Frame], detector: MotionDetector = None, **options) -> List[int]:
    policy = InferPolicy(InferOn.MOTION, motion=detector or MotionDetector(), **options)
    return [f.index for f in fresh(frames) if policy.decide(f, last=False) is None]


def test_sensor_noise_and_compression_flicker_are_not_motion(footage):
    scene, frames = footage("static")
    assert len(frames) == scene.frames
    seen, detector = detect(frames)
    assert not any(m.moving for m in seen)
    assert max(m.changed for m in seen) < 0.001 and detector.rebaselines == 0
    # a still camera: its first frame, then one re-check every stationary interval (4 s clip, 1.5 s)
    assert inferred(frames, stationary_s=1.5) == [0, 38, 76]


@pytest.mark.parametrize("name", ["exposure", "exposure_ramp"])
def test_a_change_of_exposure_is_not_motion_and_costs_at_most_one_inference(footage, name):
    """A step of a third, and auto-exposure brightening 40 % over a second: the brightness fit takes
    both (not even a new background: no inference at all beyond the first frame)."""
    scene, frames = footage(name)
    seen, detector = detect(frames)
    assert not any(m.moving for m in seen), [i for i, m in enumerate(seen) if m.moving]
    assert detector.rebaselines == 0
    assert inferred(frames, stationary_s=100) == [0]  # at most one inference: the first frame's
    # the change is real: the picture is a third brighter at the end
    change = frames[-1].image.astype(float).mean() / frames[0].image.astype(float).mean()
    assert change > 1.25


def test_a_masked_swaying_tree_is_not_motion_and_unmasked_it_is(footage):
    _, frames = footage("swaying")
    masked, _ = detect(frames, mask=[parse_polygon(M.SWAY_MASK)])
    assert not any(m.moving for m in masked)
    assert inferred(frames, MotionDetector(mask=[parse_polygon(M.SWAY_MASK)]), stationary_s=100) == [0]
    unmasked, _ = detect(frames)
    assert sum(m.moving for m in unmasked) > 0.5 * len(frames)
    tree = np.array([210, 40, 310, 200])
    for m in unmasked:
        for box in m.regions:  # the motion found is the tree's
            assert box[0] >= tree[0] - 12 and box[2] <= tree[2] + 12


def test_a_person_crossing_is_motion_where_it_is(footage):
    scene, frames = footage("crossing_object")
    seen, _ = detect(frames)
    present = [i for i in range(scene.frames) if scene.truth(i)]
    share = scene.truth(present[len(present) // 2])["a"][1]
    area = (share[2] - share[0]) * (share[3] - share[1]) / (scene.width * scene.height)
    assert 0.01 <= area <= 0.02  # the size the issue asks for: about 1-2 % of the picture
    assert not any(m.moving for m in seen[:present[0]])
    moving = [i for i in present if seen[i].moving]
    assert len(moving) >= 0.9 * len(present), (len(moving), len(present))
    for i in moving:  # a region covers the person (the region also holds where it just was)
        box = scene.truth(i)["a"][1]
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        assert any(r[0] <= centre[0] <= r[2] and r[1] <= centre[1] <= r[3] for r in seen[i].regions), i
    picked = inferred(frames, stationary_s=100)
    assert picked[0] == 0 and set(moving) <= set(picked)
    assert len(picked) <= len(moving) + 15  # and little else: the background settling behind it


def test_infer_every_caps_inference_during_motion(footage):
    _, frames = footage("crossing_object")
    picked = inferred(frames, every=5, stationary_s=100)
    assert all(b - a >= 5 for a, b in zip(picked[1:], picked[2:]))
    assert len(picked) >= 10


def test_a_region_smaller_than_min_area_is_not_motion():
    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (240, 320, 3)).astype(np.uint8)
    detector = MotionDetector(min_area=0.01)
    frames = []
    for i in range(12):
        img = base.copy()
        img[100:112, 20 + 8 * i:32 + 8 * i] = 255  # a 12 x 12 blob: 0.19 % of the picture
        frames.append(Frame(i, i, Fraction(1, 25), 0.0, img))
    assert not any(detector.detect(f, i / 25).moving for i, f in enumerate(frames))
    detector = MotionDetector(min_area=0.0005)
    assert sum(detector.detect(replace(f), i / 25).moving for i, f in enumerate(frames)) >= 10


def test_a_new_picture_is_a_new_background_not_motion():
    a, b = (np.repeat(M.texture(160, 90, seed)[..., None], 3, axis=2).astype(np.uint8) for seed in (1, 2))
    detector = MotionDetector()
    assert not detector.detect(Frame(0, 0, None, 0.0, a), 0.0).moving
    seen = detector.detect(Frame(1, 1, None, 0.0, b), 0.04)
    assert seen.rebaselined and not seen.moving and seen.changed > SPREAD_MIN
    assert not detector.detect(Frame(2, 2, None, 0.0, b), 0.08).moving  # b is the background now


def test_masks_are_polygons_in_fractions_of_the_picture():
    polygon = parse_polygon("0,0 0.5,0 0.5,0.5 0,0.5")
    mask = rasterise([polygon], 100, 60)
    assert mask[:29, :49].all() and not mask[31:, :].any() and not mask[:, 51:].any()
    for bad, words in (("0,0 1,1", "at least 3 points"), ("0,0 2,0 1,1", "outside the picture"),
                       ("0,0 a,b 1,1", "not a point")):
        with pytest.raises(ValueError, match=words):
            parse_polygon(bad)


def test_policy_first_last_cuts_stationary_and_reset():
    still, other = (np.repeat(M.texture(160, 120, seed)[..., None], 3, axis=2).astype(np.uint8) for seed in (3, 4))

    def frame(i: int, image: np.ndarray) -> Frame:
        return Frame(i, i, Fraction(1, 10), 0.0, image)

    policy = InferPolicy(InferOn.MOTION, motion=MotionDetector(), stationary_s=2.0)
    decided = [policy.decide(frame(i, still if i < 30 else other), last=i == 44) for i in range(45)]
    picked = [i for i, skip in enumerate(decided) if skip is None]
    assert picked == [0, 20, 30, 44]  # first, a re-check after 2 s, the cut, the last
    assert {decided[i] for i in range(45) if i not in picked} == {SkipReason.STILL}
    assert policy.held_still(43) and not policy.held_still(44) and not policy.held_still(999)
    policy.reset()  # a camera's new connection: its first frame goes
    assert policy.decide(frame(45, other), last=False) is None
    with pytest.raises(ValueError):
        InferPolicy(InferOn.MOTION)  # motion needs a detector


def test_moving_tracks_keep_frames_going_to_the_model():
    image = np.full((120, 160, 3), 128, np.uint8)
    policy = InferPolicy(InferOn.MOTION, motion=MotionDetector(), stationary_s=100)
    moving = [False]
    policy.moving_tracks = lambda: moving[0]
    assert policy.decide(Frame(0, 0, Fraction(1, 10), 0.0, image), last=False) is None
    assert policy.decide(Frame(1, 1, Fraction(1, 10), 0.0, image), last=False) is SkipReason.STILL
    moving[0] = True
    assert policy.decide(Frame(2, 2, Fraction(1, 10), 0.0, image), last=False) is None
