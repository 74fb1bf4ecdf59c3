"""streamer.sinks: the mp4 sink (H.264, faststart, exact PTS, even sizes, colors, atomic
rename), the JSON-lines sink, and check_output_path."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from streamer.errors import SinkError
from streamer.frames import Detections, Frame
from streamer.sinks import JsonlSink, Mp4Sink, check_output_path, even_size, pad_to_even

from ..helpers import frame_image, moov_before_mdat, read_jsonl, read_video


def frames_for(pts, time_base, width=200, height=150):
    return [Frame(index=i, pts=p, time_base=time_base, wall_time=0.0, image=frame_image(i, width, height))
            for i, p in enumerate(pts)]


def write_mp4(path: Path, frames, time_base, rate, width=200, height=150) -> Path:
    with Mp4Sink(path, width, height, time_base, rate, preset="ultrafast") as sink:
        for f in frames:
            sink.write(f, f.image, None)
    assert sink.written == len(frames)
    return path


# -- Mp4Sink ---------------------------------------------------------------------------------


def test_mp4_is_h264_yuv420p_faststart_with_every_frame(tmp_path):
    rate = Fraction(30000, 1001)
    tb = Fraction(1, 30000)
    frames = frames_for([i * 1001 for i in range(12)], tb)
    out = write_mp4(tmp_path / "out.mp4", frames, tb, rate)
    video = read_video(out)
    assert video.codec == "h264"
    assert video.pix_fmt == "yuv420p"
    assert (video.width, video.height) == (200, 150)
    assert moov_before_mdat(out)
    assert video.codes == list(range(12))


def test_mp4_keeps_2997_fps_timestamps_exactly(tmp_path):
    rate = Fraction(30000, 1001)
    tb = Fraction(1, 30000)
    n = 30
    start = 5005  # a source that does not start at 0: the output does
    frames = frames_for([start + i * 1001 for i in range(n)], tb)
    out = write_mp4(tmp_path / "out.mp4", frames, tb, rate)
    video = read_video(out)
    assert len(video.pts) == n
    expected = [float((f.pts - start) * tb) for f in frames]
    assert video.times == pytest.approx(expected, abs=1e-6)
    assert video.average_rate == rate
    assert video.duration == pytest.approx(n * 1001 / 30000, abs=1e-3)


def test_mp4_keeps_variable_frame_rate(tmp_path):
    tb = Fraction(1, 1000)
    pts = [0, 33, 50, 120, 121, 300, 333, 700, 701, 760]
    frames = frames_for(pts, tb)
    out = write_mp4(tmp_path / "vfr.mp4", frames, tb, Fraction(30))
    video = read_video(out)
    assert len(video.pts) == len(pts)
    assert video.times == pytest.approx([p / 1000 for p in pts], abs=1e-6)
    assert video.codes == list(range(len(pts)))


def test_mp4_frames_without_pts_get_consecutive_stamps(tmp_path):
    frames = [Frame(i, None, None, 0.0, frame_image(i)) for i in range(5)]
    out = write_mp4(tmp_path / "cam.mp4", frames, None, Fraction(25))
    video = read_video(out)
    assert video.times == pytest.approx([i / 25 for i in range(5)], abs=1e-6)


def test_mp4_odd_size_is_padded_to_even_repeating_the_edge(tmp_path):
    width, height = 201, 151
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, 1] = 40
    image[:, -1] = (250, 250, 250)  # last column white
    image[-1, :] = (250, 250, 250)  # last row white
    frame = Frame(0, 0, Fraction(1, 30), 0.0, image)
    out = tmp_path / "odd.mp4"
    with Mp4Sink(out, width, height, Fraction(1, 30), Fraction(30), preset="ultrafast") as sink:
        sink.write(frame, image, None)
        sink.write(Frame(1, 1, Fraction(1, 30), 0.0, image), image, None)
    video = read_video(out)
    assert (video.width, video.height) == (202, 152)
    got = video.images[0].astype(int)
    # The padding repeats the last column/row: white, not black.
    assert got[75, 201].min() > 200
    assert got[151, 100].min() > 200
    assert got[151, 201].min() > 200
    # The inside stays dark.
    assert got[75, 100].max() < 90


def test_pad_to_even_and_even_size():
    assert even_size(201, 151) == (202, 152)
    assert even_size(200, 150) == (200, 150)
    img = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    padded = pad_to_even(img)
    assert padded.shape == (4, 6, 3)
    np.testing.assert_array_equal(padded[:3, :5], img)
    np.testing.assert_array_equal(padded[:3, 5], img[:, 4])
    np.testing.assert_array_equal(padded[3, :5], img[2])
    even = np.zeros((4, 6, 3), np.uint8)
    assert pad_to_even(even) is even


def test_mp4_red_stays_red(tmp_path):
    # Catches an RGB/BGR swap between the sink and the encoder.
    image = np.zeros((120, 160, 3), np.uint8)
    image[20:100, 20:140] = (230, 25, 25)
    frames = [Frame(i, i, Fraction(1, 30), 0.0, image) for i in range(3)]
    out = write_mp4(tmp_path / "red.mp4", frames, Fraction(1, 30), Fraction(30), 160, 120)
    r, g, b = read_video(out).images[0][60, 80].astype(int)
    assert r > 200 and g < 60 and b < 60, (r, g, b)


def test_mp4_appears_under_its_name_only_after_close(tmp_path):
    out = tmp_path / "clip.mp4"
    frames = frames_for(range(4), Fraction(1, 30))
    sink = Mp4Sink(out, 200, 150, Fraction(1, 30), Fraction(30), preset="ultrafast")
    with sink:
        for f in frames:
            sink.write(f, f.image, None)
            assert not out.exists()
        partial = [p for p in tmp_path.iterdir() if p != out]
        assert len(partial) == 1, "a temporary file beside the target while writing"
        assert partial[0].parent == tmp_path and partial[0].suffix == ".mp4"
    assert out.exists()
    assert list(tmp_path.iterdir()) == [out], "the temporary file is gone"
    assert read_video(out).codes == [0, 1, 2, 3]


def test_mp4_file_is_in_place_even_when_the_block_raises(tmp_path):
    out = tmp_path / "clip.mp4"
    frames = frames_for(range(3), Fraction(1, 30))
    with pytest.raises(KeyboardInterrupt):
        with Mp4Sink(out, 200, 150, Fraction(1, 30), Fraction(30), preset="ultrafast") as sink:
            for f in frames:
                sink.write(f, f.image, None)
            raise KeyboardInterrupt
    assert read_video(out).codes == [0, 1, 2]
    assert list(tmp_path.iterdir()) == [out]


def test_mp4_nothing_written_leaves_no_file(tmp_path):
    out = tmp_path / "empty.mp4"
    with Mp4Sink(out, 200, 150, Fraction(1, 30), Fraction(30)):
        pass
    assert list(tmp_path.iterdir()) == []


def test_mp4_repeated_pts_keep_every_frame(tmp_path):
    tb = Fraction(1, 30)
    frames = frames_for([0, 1, 1, 2, 5], tb)
    out = write_mp4(tmp_path / "dup.mp4", frames, tb, Fraction(30))
    video = read_video(out)
    assert video.codes == [0, 1, 2, 3, 4]
    assert video.pts == sorted(set(video.pts)), "strictly increasing"


def test_mp4_missing_folder_raises_sink_error(tmp_path):
    target = tmp_path / "nope" / "x.mp4"
    frames = frames_for(range(3), Fraction(1, 30))
    with pytest.raises(SinkError, match="x.mp4"):
        with Mp4Sink(target, 200, 150, Fraction(1, 30), Fraction(30), preset="ultrafast") as sink:
            for f in frames:
                sink.write(f, f.image, None)
    assert not target.exists()


# -- JsonlSink -------------------------------------------------------------------------------


def test_jsonl_one_record_per_frame(tmp_path):
    out = tmp_path / "det.jsonl"
    tb = Fraction(1, 30000)
    frames = frames_for([0, 1001, 2002], tb)
    dets = Detections(np.array([[1.23456, 2.5, 30.019, 40.0]], np.float32), np.array([1]), np.array([0.912345]))
    name_of = {1: "person"}.get
    with JsonlSink(out, name_of) as sink:
        sink.write(frames[0], frames[0].image, dets)
        sink.write(frames[1], frames[1].image, None)
        assert not out.exists(), "only the temporary file exists while writing"
        sink.write(frames[2], frames[2].image, Detections.empty())
    assert sink.written == 3
    records = read_jsonl(out)
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    assert [r["pts"] for r in records] == [0, 1001, 2002]
    assert records[1]["time"] == round(1001 / 30000, 6)
    assert records[0]["detections"] == [
        {"name": "person", "label": 1, "score": 0.9123, "box": [1.23, 2.5, 30.02, 40.0]},
    ]
    assert records[1]["detections"] == [] and records[2]["detections"] == []
    assert list(tmp_path.iterdir()) == [out]


def test_jsonl_frame_without_pts(tmp_path):
    out = tmp_path / "det.jsonl"
    frame = Frame(0, None, None, 0.0, np.zeros((2, 2, 3), np.uint8))
    with JsonlSink(out, lambda label: f"class {label}") as sink:
        sink.write(frame, frame.image, Detections(np.array([[0, 0, 1, 1]]), np.array([99]), np.array([0.5])))
    (record,) = read_jsonl(out)
    assert record["pts"] is None and record["time"] is None
    assert record["detections"][0]["name"] == "class 99"


# -- check_output_path -----------------------------------------------------------------------------


def test_check_output_path_accepts_a_new_file(tmp_path):
    assert check_output_path(tmp_path / "out.mp4", overwrite=False) == tmp_path / "out.mp4"


def test_check_output_path_folder_missing(tmp_path):
    with pytest.raises(SinkError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "out.mp4", overwrite=False)


def test_check_output_path_is_a_directory(tmp_path):
    target = tmp_path / "dir.mp4"
    target.mkdir()
    with pytest.raises(SinkError, match="directory"):
        check_output_path(target, overwrite=True)


def test_check_output_path_exists_needs_overwrite(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"x")
    with pytest.raises(SinkError, match="overwrite"):
        check_output_path(target, overwrite=False)
    assert check_output_path(target, overwrite=True) == target


def test_check_output_path_equal_to_an_input(tmp_path, monkeypatch):
    source = tmp_path / "in.mp4"
    source.write_bytes(b"x")
    with pytest.raises(SinkError, match="input"):
        check_output_path(source, overwrite=True, inputs=[source])
    # The same file by another spelling.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SinkError, match="input"):
        check_output_path(Path("in.mp4"), overwrite=True, inputs=[tmp_path / "." / "in.mp4"])
    link = tmp_path / "link.mp4"
    os.symlink(source, link)
    with pytest.raises(SinkError, match="input"):
        check_output_path(link, overwrite=True, inputs=[source])
    assert check_output_path(tmp_path / "other.mp4", overwrite=False, inputs=[source])


def test_check_output_path_wrong_extension(tmp_path):
    with pytest.raises(SinkError, match=".mp4"):
        check_output_path(tmp_path / "out.avi", overwrite=False, suffixes=(".mp4", ".mov"))
    assert check_output_path(tmp_path / "OUT.MP4", overwrite=False, suffixes=(".mp4",))
    # No suffixes given: any extension.
    assert check_output_path(tmp_path / "out.avi", overwrite=False)
