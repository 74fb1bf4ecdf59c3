"""streamer.sources: parse_source checks, FileSource decoding, truncated files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from streamer.errors import SourceError
from streamer.sources import FileSource, parse_source

from ..helpers import read_code, write_clip

N = 24


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", N)


def cut(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


# -- parse_source ----------------------------------------------------------------------------


def test_parse_source_accepts_a_file(clip):
    assert parse_source(str(clip)) == clip


def test_parse_source_accepts_file_url(clip):
    assert parse_source(f"file://{clip}") == clip
    assert clip.is_absolute()


def test_parse_source_file_url_with_escaped_characters(tmp_path, clip):
    spaced = tmp_path / "my clip.mp4"
    spaced.write_bytes(clip.read_bytes())
    assert parse_source("file://" + str(spaced).replace(" ", "%20")) == spaced


def test_parse_source_missing_file(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        parse_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(SourceError, match="no such file"):
        parse_source(f"file://{tmp_path}/missing.mp4")


def test_parse_source_directory(tmp_path):
    with pytest.raises(SourceError, match="directory"):
        parse_source(str(tmp_path))


def test_parse_source_empty_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(SourceError, match="empty"):
        parse_source(str(empty))


@pytest.mark.parametrize("spec", ["rtsp://camera.local:554/stream", "ftp://host/clip.mp4",
                                  "http://host/clip.mp4", "RTSP://cam/1"])
def test_parse_source_unsupported_schemes(spec):
    with pytest.raises(SourceError, match="unsupported source scheme"):
        parse_source(spec)


# -- FileSource ---------------------------------------------------------------------------------


def test_file_source_on_text_raises_clear_source_error(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(SourceError) as info:
        with FileSource(text):
            pass
    assert "notes.mp4" in str(info.value)
    assert "not a video" in str(info.value)
    assert "\n" not in str(info.value)


def test_file_source_yields_every_frame_in_order(clip):
    with FileSource(clip) as source:
        frames = list(source.frames())
        info = source.info
        assert source.problem is None
        assert source.decoded == N
    assert [f.index for f in frames] == list(range(N))
    for f in frames:
        assert f.image.shape == (150, 200, 3) and f.image.dtype == np.uint8
        assert read_code(f.image) == f.index
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:])), pts
    assert all(f.time_base == info.time_base for f in frames)
    assert info.width == 200 and info.height == 150
    assert info.codec == "h264"
    assert info.frame_count == N
    assert info.average_rate == Fraction(30000, 1001)
    assert info.time_base is not None
    assert frames[1].time - frames[0].time == pytest.approx(1001 / 30000, abs=1e-4)
    assert info.duration == pytest.approx(N * 1001 / 30000, abs=0.05)
    assert "200x150" in info.describe()


def test_file_source_images_are_rgb(tmp_path):
    def red(index, width, height):
        img = np.zeros((height, width, 3), np.uint8)
        img[...] = (230, 25, 25)
        return img

    path = write_clip(tmp_path / "red.mp4", 2, image_fn=red)
    with FileSource(path) as source:
        frame = next(iter(source.frames()))
    r, g, b = frame.image[75, 100].astype(int)
    assert r > 200 and g < 60 and b < 60, (r, g, b)


def test_file_source_keeps_variable_frame_rate_pts(tmp_path):
    tb = Fraction(1, 1000)
    pts = [0, 40, 50, 200, 210, 500]
    path = write_clip(tmp_path / "vfr.mp4", len(pts), pts=pts, time_base=tb, rate=Fraction(30))
    with FileSource(path) as source:
        frames = list(source.frames())
    times = [f.time - frames[0].time for f in frames]
    assert times == pytest.approx([p / 1000 for p in pts], abs=1e-6)
    assert [read_code(f.image) for f in frames] == list(range(len(pts)))


def test_truncated_faststart_clip_yields_fewer_frames_and_a_problem(tmp_path):
    full = write_clip(tmp_path / "full.mp4", 60, faststart=True)
    path = cut(full, tmp_path / "cut.mp4", 0.6)
    with FileSource(path) as source:
        assert source.info.frame_count == 60
        frames = list(source.frames())  # must not raise
        problem = source.problem
    assert 0 < len(frames) < 60
    assert [f.index for f in frames] == list(range(len(frames)))
    # What did decode is right.
    assert [read_code(f.image) for f in frames[:5]] == list(range(5))
    assert problem is not None
    assert "ended early" in problem or "truncated" in problem
    assert f"{len(frames)} of 60" in problem


def test_truncated_clip_without_faststart_fails_on_open(tmp_path):
    full = write_clip(tmp_path / "full.mp4", 30, faststart=False)
    path = cut(full, tmp_path / "cut.mp4", 0.6)
    with pytest.raises(SourceError, match="moov|not a video"):
        with FileSource(path):
            pass


def test_frames_outside_with_is_an_error(clip):
    source = FileSource(clip)
    with pytest.raises(AssertionError):
        next(iter(source.frames()))
