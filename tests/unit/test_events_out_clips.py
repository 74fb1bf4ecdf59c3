"""Event clips without a server: the encoded-packet ring (bounded by time and bytes, starts at a
keyframe) and ClipOutput/ClipRecorder fed index-coded frames and synthetic events, the clips read
back with PyAV (first frame a keyframe, pre-capture covered, post-capture reached, overlapping
events in one clip, the path in the end event)."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import pytest

from streamer.events import Event, EventKind, OutputState
from streamer.events.clips import ClipOutput
from streamer.events.destinations import ClipSettings
from streamer.events.ring import EncodedPacket, PacketRing
from streamer.frames import Frame
from tests.event_values import state
from tests.helpers import frame_image, read_code

RATE = 25
TB = Fraction(1, 12800)  # a file's time base
STEP = 512  # 1/25 s in TB


def packet(i: int, keyframe_every: int = 25, size: int = 1000) -> EncodedPacket:
    return EncodedPacket(b"x" * size, i * STEP, i * STEP, STEP, i % keyframe_every == 0, i / RATE)


def test_ring_keeps_pre_capture_plus_at_most_one_keyframe_interval():
    ring = PacketRing(keep_s=5.0)
    for i in range(500):  # 20 s
        ring.append(packet(i))
        if i >= 150:
            assert 5.0 - 1e-6 <= ring.seconds < 6.0
    first = ring.since(ring.start_at_or_after(-1))[0]
    assert first.keyframe and len(ring) <= 6 * RATE
    assert ring.nbytes == len(ring) * 1000 and ring.peak_bytes <= 151 * 1000
    # a clip wanting 4.5 s back starts at the oldest keyframe at or after it
    newest = 499 / RATE
    start = ring.since(ring.start_at_or_after(newest - 4.5))[0]
    assert start.keyframe and newest - 4.5 <= start.time < newest - 3.5
    assert ring.start_at_or_after(newest + 0.5) is None  # no keyframe that late yet


def test_ring_byte_cap_drops_whole_keyframe_intervals_and_waits_for_a_keyframe():
    ring = PacketRing(keep_s=60.0, max_bytes=30_000)  # 1.2 intervals of 25 packets x 1000 bytes
    ring.append(packet(3))  # not a keyframe: nothing decodes from it
    assert len(ring) == 0 and ring.dropped_waiting == 1
    for i in range(25, 300):
        ring.append(packet(i))
        assert ring.nbytes <= 30_000 or len(ring) <= 25
    assert ring.since(ring.start_at_or_after(0))[0].keyframe


def frames_with_events(out: ClipOutput, camera: str, count: int, events_at: dict, size=(200, 150)):
    """Feed `count` index-coded frames to the camera's recorder; before frame i, the events at i go
    through stamp() then publish() (as the events stage and the fan-out do). The stamped events."""
    recorder = out.frame_sink(camera, lossless=True)
    stamped = []
    with recorder:
        for i in range(count):
            for event in events_at.get(i, []):
                event = out.stamp(event)
                out.publish(event)
                stamped.append(event)
            image = frame_image(i, *size)
            recorder.write(Frame(i, i * STEP, TB, 0.0, image, duration=STEP), image, None)
    return stamped


def obj(track_id: int, first: int, last: int, camera: str = "front"):
    new = state(camera, track_id, first, first / RATE)
    end = replace(new, frame_index=last, source_time=last / RATE, end_time=last / RATE)
    return Event(EventKind.NEW, new), Event(EventKind.END, end, new)


def read_clip(path: Path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        container.seek(0)
        frames = list(container.decode(stream))
    return packets, [read_code(f.to_ndarray(format="rgb24")) for f in frames], frames


def test_overlapping_events_make_one_clip_from_a_keyframe_through_post_capture(tmp_path):
    out = ClipOutput(ClipSettings(tmp_path, pre_capture=2.0, post_capture=1.0), lambda m: None)
    a_new, a_end = obj(1, 100, 150)  # 4.0 s .. 6.0 s
    b_new, b_end = obj(2, 160, 200)  # appears within A's post-capture (6.0 + 1.0): the same clip
    c_new, _ = obj(3, 260, 999)  # after B's post-capture (9.0 s): a clip of its own, cut at the end
    with out:
        stamped = frames_with_events(out, "front", 300, {100: [a_new], 150: [a_end], 160: [b_new], 200: [b_end],
                                                         260: [c_new]})
    clips = sorted(out.written)
    assert len(clips) == 2 and all(p.parent == tmp_path for p in clips)
    assert not list(tmp_path.glob(".*"))  # no temporary file left
    assert [Path(e.after.clip) for e in stamped] == [clips[0]] * 4 + [clips[1]]
    assert stamped[1].after.to_json()["has_clip"] is True and stamped[1].kind is EventKind.END
    first_clip = clips[0]
    assert first_clip.name == "front-00h00m04.00s.mp4"
    packets, codes, frames = read_clip(first_clip)
    assert packets[0].is_keyframe and frames[0].key_frame
    assert codes == list(range(codes[0], codes[0] + len(codes)))  # every frame, in order
    assert 100 - 2 * RATE <= codes[0] <= 100 - 1 * RATE  # pre-capture: at most 2 s, at least 2 s - 1 s
    assert codes[-1] >= 200 + 1 * RATE  # post-capture after the last end
    assert float(frames[0].time) == 0.0
    packets, codes, frames = read_clip(clips[1])
    assert packets[0].is_keyframe and 260 - 2 * RATE <= codes[0] <= 260 - 1 * RATE and codes[-1] == 299
    status = out.status()
    assert (status.sent, status.failed, status.dropped, status.state) == (2, 0, 0, OutputState.CLOSED)


def test_a_late_live_event_after_a_clip_was_cut_opens_a_new_clip(tmp_path):
    """Live, an event comes for a frame shown a moment ago. When its time is within a finished
    group's post-capture but the recorder was already handed the frames past that group's end, the
    clip is being closed: the event opens a new clip and the first one is never rewritten."""
    out = ClipOutput(ClipSettings(tmp_path, pre_capture=0.4, post_capture=0.4), lambda m: None)
    a_new, a_end = obj(1, 10, 20)  # the clip ends at 0.8 + 0.4 s = frame 30
    late = Event(EventKind.NEW, state("front", 2, 25, 25 / RATE))  # for frame 25, arriving at frame 60
    with out:
        stamped = frames_with_events(out, "front", 90, {10: [a_new], 20: [a_end], 60: [late]})
    first, second = Path(stamped[0].after.clip), Path(stamped[2].after.clip)
    assert first != second and sorted(out.written) == sorted([first, second])
    _, codes, _ = read_clip(first)
    assert codes[0] <= 10 and 30 <= codes[-1] < 60
    packets, codes, _ = read_clip(second)
    assert packets[0].is_keyframe and codes[0] >= 25 - 0.4 * RATE  # its own start: at most pre-capture early


def test_no_pre_capture_starts_at_the_event_frame(tmp_path):
    out = ClipOutput(ClipSettings(tmp_path, pre_capture=0.0, post_capture=0.4), lambda m: None)
    new, end = obj(1, 37, 50)
    with out:
        frames_with_events(out, "front", 80, {37: [new], 50: [end]})
    packets, codes, _ = read_clip(out.written[0])
    assert packets[0].is_keyframe and codes[0] == 37 and codes[-1] >= 60


def test_live_recorder_drops_what_its_queue_cannot_hold(tmp_path):
    said = []
    out = ClipOutput(ClipSettings(tmp_path), said.append)
    recorder = out.frame_sink("cam1")  # live: never waits
    recorder.capacity = 2
    with recorder:
        image = frame_image(0, 640, 480)
        for i in range(200):
            recorder.write(Frame(i, i * STEP, TB, 0.0, image, duration=STEP), image, None)
    assert recorder.status().dropped > 0
    assert out.status().dropped == recorder.status().dropped
    assert len([line for line in said if "is full" in line]) == 1


def test_an_event_for_a_camera_without_frames_gets_no_clip(tmp_path):
    out = ClipOutput(ClipSettings(tmp_path), lambda m: None)
    new, _ = obj(1, 0, 1, camera="elsewhere")
    assert out.stamp(new).after.clip is None


def test_a_long_run_keeps_a_bounded_record_of_the_clip_names_it_handed_out(tmp_path):
    """Every clip's name is decided on the video path; the names remembered (to keep two clips of
    one second apart) are the recent ones only, however many clips a camera makes in a day."""
    from streamer.events.clips import FINISHED

    out = ClipOutput(ClipSettings(tmp_path, pre_capture=1.0, post_capture=1.0), lambda m: None)
    out.frame_sink("front")  # the camera has a recorder (not started: only the names are decided here)
    paths = set()
    for k in range(2 * FINISHED + 10):
        new, end = obj(k + 1, 0, 1)
        new = replace(new, after=replace(new.after, source_time=k * 3.0, start_time=k * 3.0))
        end = replace(end, after=replace(end.after, source_time=k * 3.0 + 0.5))
        paths.add(out.stamp(new).after.clip)
        out.stamp(end)
    assert len(paths) == 2 * FINISHED + 10  # one clip each, each its own name
    assert len(out.names) <= FINISHED


def test_unique_names_skip_recent_ones_and_files_that_exist(tmp_path):
    from streamer.events.snapshots import UniqueNames

    names = UniqueNames(keep=3)
    (tmp_path / "a-2.mp4").write_bytes(b"")
    taken = [names.take(tmp_path / "a.mp4") for _ in range(3)]
    assert [p.name for p in taken] == ["a.mp4", "a-3.mp4", "a-4.mp4"] and len(names) == 3
    assert names.take(tmp_path / "b.mp4").name == "b.mp4" and len(names) == 3  # the oldest is forgotten


@pytest.mark.parametrize("pre,post", [(-1, 5), (61, 5), (5, -1)])
def test_capture_bounds(pre, post):
    from streamer.settings import SettingsError

    with pytest.raises(SettingsError):
        ClipSettings(Path("."), pre, post)


def test_frames_waiting_for_the_clip_encoder_hold_the_drawn_picture_only(tmp_path):
    """The recorder encodes the drawn picture; the frame's own (raw) picture is not kept while the
    frame waits in its queue (8 frames waiting would hold twice the memory the docs state)."""
    import gc
    import weakref

    recorder = ClipOutput(ClipSettings(tmp_path), lambda m: None).frame_sink("cam1")  # not started: frames wait
    raw_refs, drawn_refs = [], []
    for i in range(3):
        raw, drawn = frame_image(i), frame_image(i)
        raw_refs.append(weakref.ref(raw))
        drawn_refs.append(weakref.ref(drawn))
        recorder.write(Frame(i, i * STEP, TB, 0.0, raw, duration=STEP), drawn, None)
        del raw, drawn
    gc.collect()
    assert [r() is None for r in raw_refs] == [True] * 3
    assert [r() is None for r in drawn_refs] == [False] * 3
