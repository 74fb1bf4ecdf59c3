"""`streamer render` without a server: logs written by the real JsonlSink, rendered onto real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamer.errors import ExitCode, SourceError, StreamerError
from streamer.frames import Detections
from streamer.render import draw_detections
from streamer.rerender import LogMismatch, load_log, render, run_record
from streamer.sinks import JsonlSink
from streamer.sources import FileSource

from ..helpers import read_jsonl
from ..media_inputs import Audio, make_input, read_back

NAMES = {1: "person", 3: "car"}


def fake_detections(index: int) -> Detections:
    """Two boxes per frame, moving, with scores 0.6 and 0.9 (what a run would have kept at 0.5)."""
    x = 10 + 3 * index
    return Detections(np.array([[x, 40, x + 50, 120], [100, 30 + index, 180, 90 + index]], np.float32),
                      np.array([1, 3]), np.array([0.6, 0.9], np.float32))


def write_log(video: Path, path: Path, threshold=0.5, classes=None, frames=None) -> Path:
    """The JSONL a `run` on `video` writes (detections made up, every other field real)."""
    with FileSource(video, audio=False) as src, \
            JsonlSink(path, lambda i: NAMES.get(i, f"class {i}"), run_record(src.info, threshold, classes)) as sink:
        for frame in src.frames():
            if frames is not None and frame.index >= frames:
                break
            sink.write(frame, frame.image, fake_detections(frame.index).above(threshold).with_labels(classes))
    return path


@pytest.fixture
def clip(tmp_path):
    return make_input(tmp_path / "clip.mp4", count=20, rotation=90, audio=[Audio("aac")])


def test_each_record_is_one_frame_and_carries_what_render_needs(clip, tmp_path):
    records = read_jsonl(write_log(clip, tmp_path / "run.jsonl", classes=[1, 3]))
    assert len(records) == 20  # no header line
    first = records[0]
    assert first["frame"] == 0 and first["time_base"] == "1/15360" and first["threshold"] == 0.5
    assert first["classes"] == [1, 3] and first["size"] == [150, 200]  # the upright size


def test_render_redraws_the_log_with_a_higher_threshold(clip, tmp_path):
    log = load_log(write_log(clip, tmp_path / "run.jsonl"))
    out = tmp_path / "again.mp4"
    said = []
    result = render(clip, log, out, threshold=0.8, classes=None, say=said.append)
    assert result.streams[0].frames["written"] == 20
    again, src = read_back(out), read_back(clip)
    assert (again.width, again.height) == (150, 200) and again.rotation == 0
    assert again.audio[0]["codec"] == "aac"
    assert again.audio[0]["seconds"] == pytest.approx(src.audio[0]["seconds"], abs=again.audio[0]["frame"])
    with FileSource(clip, audio=False) as source:
        for frame, image in zip(source.frames(), again.images):
            expected = draw_detections(frame.image, fake_detections(frame.index).above(0.8),
                                       lambda i: NAMES[i])
            assert np.abs(image.astype(int) - expected).mean() < 4
            wrong = draw_detections(frame.image, fake_detections(frame.index), lambda i: NAMES[i])
            assert np.abs(image.astype(int) - expected).mean() < np.abs(image.astype(int) - wrong).mean()


def test_render_below_the_logs_threshold_is_refused(clip, tmp_path):
    log = load_log(write_log(clip, tmp_path / "run.jsonl", threshold=0.7))
    with pytest.raises(StreamerError, match=r"below the log's 0\.7") as err:
        render(clip, log, tmp_path / "again.mp4", threshold=0.5, classes=None)
    assert err.value.exit_code == ExitCode.USAGE
    assert not (tmp_path / "again.mp4").exists()


def test_classes_the_run_filtered_out_are_refused(clip, tmp_path):
    log = load_log(write_log(clip, tmp_path / "run.jsonl", classes=[3]))
    with pytest.raises(StreamerError, match=r"kept only car"):
        render(clip, log, tmp_path / "again.mp4", threshold=None, classes=["person"])


def test_a_log_from_a_shorter_run_renders_its_frames_and_says_so(clip, tmp_path):
    log = load_log(write_log(clip, tmp_path / "run.jsonl", frames=8))
    said = []
    result = render(clip, log, tmp_path / "again.mp4", threshold=None, classes=None, say=said.append)
    again = read_back(tmp_path / "again.mp4")
    assert result.streams[0].frames["written"] == 8 and len(again.images) == 8
    assert any("covers frames 0-7 of the video's 20" in m for m in said)
    assert again.audio[0]["seconds"] == pytest.approx(8 / 30, abs=again.audio[0]["frame"])


def test_a_foreign_log_fails_cleanly_and_leaves_no_file(clip, tmp_path):
    other = make_input(tmp_path / "other.mp4", count=20, rotation=90, rate=25)  # other PTS, same size
    log = load_log(write_log(other, tmp_path / "other.jsonl"))
    out = tmp_path / "again.mp4"
    with pytest.raises(LogMismatch, match="does not belong to clip.mp4") as err:
        render(clip, log, out, threshold=None, classes=None)
    assert err.value.exit_code == ExitCode.SOURCE
    assert list(tmp_path.glob("*again*")) == []

    # same time base and size, but the PTS do not fit
    records = read_jsonl(write_log(clip, tmp_path / "run.jsonl"))
    for r in records:
        r["pts"] += 7
    shifted = tmp_path / "shifted.jsonl"
    shifted.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(LogMismatch, match="frame 0 has pts 0 in the video but 7"):
        render(clip, load_log(shifted), out, threshold=None, classes=None)
    assert list(tmp_path.glob("*again*")) == []

    # a log longer than the video
    longer = tmp_path / "longer.jsonl"
    longer.write_text("".join(json.dumps(dict(records[0], frame=i, pts=i * 512)) + "\n" for i in range(30)))
    with pytest.raises(LogMismatch, match="the log has 30 frames"):
        render(clip, load_log(longer), out, threshold=None, classes=None)
    assert list(tmp_path.glob("*again*")) == []


@pytest.mark.parametrize("content,message", [
    (None, "no such detections log"),
    ("", "is empty"),
    ("not json\n", "line 1 is not JSON"),
    ('{"a": 1}\n', "line 1 is not a frame record"),
    ('{"frame": 0, "pts": 0, "time": 0, "status": "ok", "detections": []}\n', "lacks time_base and threshold"),
])
def test_missing_empty_or_foreign_jsonl_is_one_clear_error(content, message, tmp_path):
    path = tmp_path / "log.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SourceError, match=message) as err:
        load_log(path)
    assert err.value.exit_code == ExitCode.SOURCE


@pytest.mark.parametrize("content", [None, "", "garbage\n"])
def test_render_command_missing_empty_or_foreign_log_is_one_line_exit_3_and_no_file(content, clip, tmp_path):
    from click.testing import CliRunner

    from streamer.cli import cli

    log = tmp_path / "run.jsonl"
    if content is not None:
        log.write_text(content)
    out = tmp_path / "again.mp4"
    result = CliRunner().invoke(cli, ["render", str(clip), "--detections", str(log), "--out", str(out)])
    assert result.exit_code == ExitCode.SOURCE, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    assert list(tmp_path.glob("*again*")) == []


def test_render_narrows_the_classes(clip, tmp_path):
    log = load_log(write_log(clip, tmp_path / "run.jsonl"))
    said = []
    render(clip, log, tmp_path / "cars.mp4", threshold=None, classes=["Car", "zebra"], say=said.append)
    again = read_back(tmp_path / "cars.mp4")
    assert any("no detection of zebra" in m for m in said)
    with FileSource(clip, audio=False) as source:
        for frame, image in zip(source.frames(), again.images):
            only_cars = fake_detections(frame.index).with_labels([3])
            expected = draw_detections(frame.image, only_cars, lambda i: NAMES[i])
            both = draw_detections(frame.image, fake_detections(frame.index), lambda i: NAMES[i])
            assert np.abs(image.astype(int) - expected).mean() < np.abs(image.astype(int) - both).mean()
