"""streamer.recording and the sinks written through it: what a SIGKILL leaves (a writer process killed
by PID after a seeded number of frames, its files read back with PyAV), torn tails, keyframes,
partial names and locks, the torn-line rule of JSON lines, and a camera's segments with their
index, gaps, retention and a folder that vanishes."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from streamer import detlog
from streamer.errors import SourceError
from streamer.frames import Detections, Frame
from streamer.recording import fragments
from streamer.recording import files
from streamer.recording.files import DurableFile, is_locked, parse_partial, partial_path
from streamer.recording.lines import read_json_lines
from streamer.recording.retention import parse_retention
from streamer.recording.segments import LiveRecorder, SegmentIndex, apply_retention
from streamer.rerender import load_log
from streamer.sinks import KEY_EVERY_S, LOOKAHEAD_S, JsonlSink, Mp4Sink
from streamer.states import RecordingState

from ..helpers import STREAMER, frame_image, moov_before_mdat, read_jsonl, read_video, wait_until

ROOT = Path(__file__).resolve().parents[2]
RATE = 30
# What a kill may lose: the frames since the last keyframe (KEY_EVERY_S) and those in the encoder's
# look-ahead (LOOKAHEAD_S), plus the frame being written.
MAY_LOSE = math.ceil(RATE * (KEY_EVERY_S + LOOKAHEAD_S)) + 1

WRITER = r"""
import sys, time
from fractions import Fraction
from pathlib import Path
from streamer.frames import Detections, Frame
from streamer.sinks import JsonlSink, Mp4Sink
from tests.helpers import frame_image

n, out, log = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
tb = Fraction(1, 30)
with Mp4Sink(out, 200, 150, tb, Fraction(30)) as video, JsonlSink(log, str) as lines:
    print(video.partial, lines.partial, flush=True)
    for i in range(n):
        image = frame_image(i)
        frame = Frame(i, i, tb, 0.0, image)
        video.write(frame, image, None)
        lines.write(frame, image, Detections.empty())
    print("written", flush=True)
    time.sleep(120)
"""


def killed_writer(tmp_path: Path, n: int):
    """A process that writes n frames to out.mp4 and n records to out.jsonl, then is SIGKILLed."""
    out, log = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(n), str(out), str(log)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        video, lines = (Path(p) for p in proc.stdout.readline().split())
        assert proc.stdout.readline().strip() == "written"
        assert is_locked(video) and is_locked(lines), "a live writer holds its partials"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out, log, video, lines


def test_a_partial_appears_on_disk_only_once_its_writer_holds_the_lock(tmp_path, monkeypatch):
    """A recorder finishing a killed run's partials (or `streamer recover`) looks at every unlocked
    partial: one seen between its creation and its lock would be taken for stale (and removed)."""
    target = tmp_path / "rec.mp4"
    partial = partial_path(target, "20261206T102356-e4ed")
    seen_at_lock = []
    real_flock = files.fcntl.flock
    monkeypatch.setattr(files.fcntl, "flock", lambda fd, op: seen_at_lock.append(partial.exists()) or real_flock(fd, op))
    writer = DurableFile(partial, target)
    try:
        assert seen_at_lock == [False] and is_locked(partial) and os.listdir(tmp_path) == [partial.name]
        with pytest.raises(files.OutputFailed, match="being written by another running streamer"):
            DurableFile(partial, target, append=True)
    finally:
        writer.close()
    assert os.listdir(tmp_path) == [partial.name]


def test_a_killed_writer_keeps_all_but_its_last_second_and_recover_finishes_it(tmp_path):
    rng = random.Random(23)
    for n in sorted(rng.sample(range(40, 160), 3)):
        folder = tmp_path / f"kill{n}"
        folder.mkdir()
        out, log, video, lines = killed_writer(folder, n)
        assert not is_locked(video) and not out.exists() and not log.exists()
        assert parse_partial(video).target == out and parse_partial(lines).target == log
        # what the kill left plays as it is, every frame from the first, in order
        left = read_video(video)
        kept = len(left.codes)
        assert left.codes == list(range(kept)) and n - kept <= MAY_LOSE, (n, kept)
        assert [r["frame"] for r in read_json_lines(lines).records] == list(range(n)), "every record reached the OS"
        result = subprocess.run(STREAMER + ["recover", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert result.returncode == 0, result.stderr
        assert f"recovered {out}: {kept} frames" in result.stdout
        finished = read_video(out)
        assert finished.codes == list(range(kept)) and finished.pts == left.pts
        assert moov_before_mdat(out) and not fragments.scan(out).fragmented
        result = subprocess.run(STREAMER + ["recover", str(log)], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert result.returncode == 0 and len(read_jsonl(log)) == n, result.stderr
        assert sorted(p.name for p in folder.iterdir()) == ["out.jsonl", "out.mp4"], "no partial left"
    again = subprocess.run(STREAMER + ["recover", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 3 and "nothing to recover" in again.stderr


def fragmented(path: Path, n: int, rate: int = RATE) -> Path:
    """A fragmented recording of n index-coded frames, left as the partial a kill would leave."""
    tb = Fraction(1, rate)
    sink = Mp4Sink(path, 200, 150, tb, Fraction(rate), finish=False)
    with sink:
        for i in range(n):
            image = frame_image(i)
            sink.write(Frame(i, i, tb, 0.0, image), image, None)
    return sink.partial


def test_a_torn_last_fragment_is_cut_back_to_whole_fragments(tmp_path):
    partial = fragmented(tmp_path / "a.mp4", 100)
    whole = fragments.scan(partial)
    assert whole.fragmented and whole.frames == 100 and whole.torn == 0
    data = partial.read_bytes()
    rng = random.Random(5)
    for cut in sorted(rng.sample(range(whole.header_end + 1, len(data)), 5)):
        torn = tmp_path / f"torn{cut}.mp4"
        torn.write_bytes(data[:cut])
        found = fragments.trim(torn)
        assert found.whole_end <= cut and torn.stat().st_size == found.whole_end
        back = read_video(torn)  # decodes without an error to its end
        assert back.codes == list(range(len(back.codes))) and len(back.codes) == found.frames


def test_keyframes_come_at_least_every_second_and_the_finished_file_is_regular(tmp_path):
    out = tmp_path / "k.mp4"
    with Mp4Sink(out, 200, 150, Fraction(1, 90000), Fraction(25)) as sink:  # a camera's clock: 1/90000
        for i in range(100):
            image = frame_image(i)
            sink.write(Frame(i, i * 3600, Fraction(1, 90000), 0.0, image), image, None)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        keys = [float(p.pts * p.time_base) for p in container.demux(stream) if p.size and p.is_keyframe]
        assert stream.frames == 100  # a regular mp4: the header counts the frames
    assert keys[0] == 0 and max(np.diff(keys)) <= KEY_EVERY_S + 1e-6, keys
    assert moov_before_mdat(out) and not fragments.scan(out).fragmented
    assert [p for p in tmp_path.iterdir()] == [out]


def test_partial_names_are_unique_and_held_by_their_writer(tmp_path):
    target = tmp_path / "same.mp4"
    a = Mp4Sink(target, 200, 150, None, Fraction(30))
    b = Mp4Sink(target, 200, 150, None, Fraction(30))
    assert a.partial != b.partial
    assert parse_partial(a.partial).target == target and parse_partial(a.partial).run_id != parse_partial(b.partial).run_id
    with a:
        assert is_locked(a.partial)
        a.discard()
    assert not a.partial.exists() and not is_locked(a.partial)


def test_a_torn_last_line_is_left_out_with_a_note_and_render_accepts_the_log(tmp_path):
    log = tmp_path / "run.jsonl"
    extra = {"time_base": "1/30", "size": [200, 150], "threshold": 0.5, "classes": None}
    with JsonlSink(log, {1: "person"}.get, extra) as sink:
        for i in range(3):
            frame = Frame(i, i, Fraction(1, 30), 0.0, frame_image(i))
            sink.write(frame, frame.image, Detections(np.array([[1, 2, 30, 40]]), [1], [0.9]))
    whole = log.read_bytes()
    log.write_bytes(whole + b'{"frame": 3, "pts": 3, "sta')  # a kill inside the fourth record
    records, note = detlog.read_log(log)
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert "(line 4) is cut short" in note and "killed" in note
    loaded = load_log(log)
    assert len(loaded.records) == 3 and loaded.note == note
    log.write_bytes(whole.replace(b"\n", b"\nnot json\n", 1))  # a bad line that is not the last: an error
    with pytest.raises(SourceError, match="line 2 is not JSON"):
        detlog.read_log(log)


# -- a camera's segments ---------------------------------------------------------------------------

EPOCH = 1_800_000_000.0  # Unix time of the frames' clock 0 (a multiple of 2 s: segments start at 0)


def camera_frames(seconds: float, rate: int = 25, start: float = 0.0, first: int = 0):
    """Frames captured from `start` (s on the clock) on; 10 ms past the tick so no frame sits on a
    segment boundary (the clock offset is read with microseconds of jitter)."""
    for i in range(int(seconds * rate)):
        t = start + 0.01 + i / rate
        image = frame_image(first + i)
        yield Frame(first + i, round(t * 90000), Fraction(1, 90000), t, image)


def recorder(folder: Path, **options) -> LiveRecorder:
    return LiveRecorder(folder, Fraction(25), Fraction(1, 90000), camera="cam1", log=options.pop("log", print),
                        clock=lambda: time.monotonic() + EPOCH, **options)


def segment_codes(folder: Path, index: list) -> list:
    return [read_video(folder / e["file"]).codes for e in index]


def test_segments_split_at_the_clock_and_at_gaps_with_every_frame_once_and_an_index(tmp_path):
    folder = tmp_path / "cam1"
    with recorder(folder, segment_s=2.0) as rec:
        for frame in camera_frames(5.0):  # 0-5 s: segments 0-2, 2-4, 4-5
            rec.write(frame, frame.image, None)
        for frame in camera_frames(2.0, start=8.0, first=125):  # the camera was gone for 3 s: a gap
            rec.write(frame, frame.image, None)
        assert rec.status().state is RecordingState.RECORDING and rec.status().current is not None
    index = SegmentIndex(folder).entries()
    assert [e["frames"] for e in index] == [50, 50, 25, 50]
    codes = segment_codes(folder, index)
    assert sum(codes, []) == list(range(175)), "every frame once, in order, across the boundaries"
    for entry, seg in zip(index, codes):
        local = time.localtime(entry["start_unix"])
        assert entry["file"] == time.strftime("%Y-%m-%d/%H-%M-%S.mp4", local)
        assert entry["start"][:19] == time.strftime("%Y-%m-%dT%H:%M:%S", local) and entry["start"][-6] in "+-"
        assert entry["bytes"] == (folder / entry["file"]).stat().st_size
        assert entry["first_frame"] == seg[0]
        with av.open(str(folder / entry["file"])) as container:  # each segment starts at a keyframe
            assert next(container.demux(video=0)).is_keyframe
    starts = [e["start_unix"] - EPOCH for e in index]
    assert starts == pytest.approx([0.01, 2.01, 4.01, 8.01], abs=0.005)
    assert [e["gap_before_s"] for e in index][:3] == [None, None, None] and index[3]["gap_before_s"] > 3
    assert index[2]["end_unix"] - EPOCH == pytest.approx(5.01, abs=0.005)


def test_a_retry_that_opens_a_segment_just_before_its_boundary_goes_on_recording(tmp_path):
    """The segment a retry opens may end before its first fragment is written (so before the state
    says "recording"): the next segment opens at once, not one retry interval later."""
    parent = tmp_path / "disk"
    parent.mkdir()
    said = []
    with recorder(parent / "cam1", segment_s=2.0, retry_s=2.0, log=said.append) as rec:
        frames = camera_frames(8.0)
        for frame in frames:
            rec.write(frame, frame.image, None)
            if frame.index == 25:
                break
        shutil.rmtree(parent)
        for frame in frames:  # until the recording notices
            rec.write(frame, frame.image, None)
            if rec.status().state is not RecordingState.RECORDING:
                break
        parent.mkdir()
        time.sleep(2.1)  # one retry interval (the recorder retries on the real clock)
        for frame in frames:  # frames up to 5.8 s are dropped unwritten: the camera's next frame is 0.2 s
            if frame.wall_time >= 5.8:  # before a boundary, when the retry comes
                rec.write(frame, frame.image, None)
        missed = rec.status().not_recorded
    assert rec.status().state is RecordingState.RECORDING, said
    assert any("recording again" in line for line in said), said
    index = SegmentIndex(parent / "cam1").entries()
    after = [codes for entry, codes in zip(index, segment_codes(parent / "cam1", index)) if entry["start_unix"] - EPOCH > 5]
    assert sum(after, []) == list(range(145, 200)) and missed <= 2, (after, missed)


def test_retention_deletes_the_oldest_segments_never_the_one_being_written(tmp_path):
    assert parse_retention("7d,50GB").max_age_s == 7 * 86400 and parse_retention("500MiB").max_bytes == 500 * 2 ** 20
    for bad in ("7 parsecs", "7d,8d", "0GB"):
        with pytest.raises(ValueError):
            parse_retention(bad)
    folder = tmp_path / "cam1"
    said = []
    with recorder(folder, segment_s=2.0, log=said.append) as rec:
        for frame in camera_frames(6.5):
            rec.write(frame, frame.image, None)
        wait_until(lambda: len(SegmentIndex(folder).entries()) == 3, 60,
                   what=f"3 segments finished (a background job): {said}")
        sizes = [e["bytes"] for e in SegmentIndex(folder).entries()]
        # a size limit that holds the newest finished segment only; the one being written is not counted
        deleted = apply_retention(folder, parse_retention(f"{sizes[-1] + 1}B"), EPOCH + 7)
        left = SegmentIndex(folder).entries()
        assert len(deleted) == 2 and [e["bytes"] for e in left] == sizes[-1:]
        assert not (folder / deleted[0]).exists() and rec.status().current is not None
        assert Path(rec.status().current).parent.is_dir()
    # by age: everything finished more than 1 s before "now" goes
    entries = SegmentIndex(folder).entries()
    assert apply_retention(folder, parse_retention("1s"), entries[-1]["end_unix"] + 2) == [e["file"] for e in entries]
    assert SegmentIndex(folder).entries() == [] and not any(folder.glob("*/*.mp4"))


def test_a_vanished_folder_stops_the_recording_which_goes_on_when_it_is_back(tmp_path):
    parent = tmp_path / "disk"
    parent.mkdir()
    folder = parent / "cam1"
    said = []
    with recorder(folder, segment_s=2.0, retry_s=0.3, log=said.append) as rec:
        frames = camera_frames(12.0)
        for frame in frames:  # record 3 s, then the disk goes
            rec.write(frame, frame.image, None)
            if frame.index == 75:
                break
        shutil.rmtree(parent)
        for frame in frames:  # until the recording notices and stops
            rec.write(frame, frame.image, None)
            if rec.status().state is not RecordingState.RECORDING:
                break
        status = rec.status()
        assert status.state is RecordingState.RETRYING and "deleted" in status.reason
        assert any("recording stopped" in line and "trying again" in line for line in said), said
        for frame in frames:  # still gone: nothing is recorded, the frames are counted
            rec.write(frame, frame.image, None)
            if frame.index == 200:
                break
        assert rec.status().not_recorded > 0
        parent.mkdir()  # the disk is back (our camera folder is made again; its parent never is)
        time.sleep(0.4)
        for frame in frames:
            rec.write(frame, frame.image, None)
    assert rec.status().state is RecordingState.RECORDING
    assert any("recording again" in line for line in said), said
    index = SegmentIndex(folder).entries()
    codes = sum(segment_codes(folder, index), [])
    assert codes and codes == list(range(codes[0], codes[0] + len(codes)))  # after the gap, every frame in order
    assert codes[-1] == 299


def test_one_file_recording_is_fragmented_while_written(tmp_path):
    out = tmp_path / "rec.mp4"
    with recorder(out) as rec:
        for frame in camera_frames(3.0):
            rec.write(frame, frame.image, None)
        partial = Path(rec.status().current)
        assert partial == out and not out.exists()
    assert read_video(out).codes == list(range(75)) and moov_before_mdat(out)
    assert json.loads(json.dumps(rec.status().to_json()))["files"] == 1


def test_a_checkpoint_is_read_back_only_with_the_stages_classes(tmp_path):
    import os as os_module
    import pickle

    from streamer.recording.resume import Checkpoint, Checkpoints
    from streamer.selection import selection_stages
    from streamer.tracking import FileTracker

    from streamer.motion import MotionDetector
    from streamer.policy import InferPolicy
    from streamer.states import InferOn
    from streamer.tracking import media_time

    tracker = FileTracker(infer_every=3)
    chain = selection_stages(0.5, None, [tracker])
    policy = InferPolicy(InferOn.MOTION, 3, 10.0, MotionDetector(), clock=media_time)  # the file run's schedule
    frames = [Frame(i, i, Fraction(1, 25), 0.0, frame_image(i)) for i in range(6)]
    for frame in frames[:4]:
        policy.decide(frame)
        list(chain.push(frame, Detections(np.array([[10 + frame.index, 10, 60, 70]]), [1], [0.9])
                        if frame.index % 3 == 0 else None))
    store = Checkpoints(tmp_path / "state")
    store.save(Checkpoint(3, chain, policy, 0))
    back = store.load(3)
    assert back.frame == 3 and back.stages.stages[1].tracker.next_id == tracker.tracker.next_id
    # the policy goes on exactly as the killed run's would have (motion background, cuts, re-check clock)
    assert [back.policy.decide(f) for f in frames[4:]] == [policy.decide(f) for f in frames[4:]]
    assert back.policy.moved == policy.moved

    class Planted:  # what a planted file would do: call a function on load
        def __reduce__(self):
            return (os_module.system, ("true",))

    (tmp_path / "state" / "000000004.ckpt").write_bytes(pickle.dumps(Planted()))
    with pytest.raises(pickle.UnpicklingError, match="may not hold posix.system"):
        store.load(4)


def test_a_run_with_events_keeps_no_checkpoints_and_options_name_the_inference(tmp_path):
    """A file run's event stage (counts, open events, where they went) is not checkpointed: its outputs
    keep no checkpoints at all, so a --resume starts it over instead of going on without the events.
    And the options a resume must share name which frames went to the model."""
    from streamer.recording.resume import FileRunOutputs, run_options

    options = run_options(0.5, None, True, 1, True, None, {"arch": "a"}, {"infer_on": "always"})
    assert options != run_options(0.5, None, True, 1, True, None, {"arch": "a"}, {"infer_on": "motion"})
    outputs = FileRunOutputs(None, tmp_path / "a.jsonl", {"size": 1}, options, None, say=lambda line: None)
    outputs.without_checkpoints()
    for i in range(0, 100, 5):  # four seconds of frames at 25 fps, all settled
        outputs.settled(Frame(i, i, Fraction(1, 25), 0.0, np.zeros((2, 2, 3), np.uint8)))
    assert outputs.checkpoints.frames() == []
    outputs.abandon()
