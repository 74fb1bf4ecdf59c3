"""The settings layer: camera files validated once, errors naming the camera and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from streamer.triton.targets import Target
from streamer.cli import cli
from streamer.errors import ExitCode
from streamer.errors import SinkError
from streamer.settings import Selection, SettingsError, load_camera_file, quick_cameras, watch_cameras

GOOD = """\
# cameras.yaml
triton: localhost:8001
metrics_port: 9108
defaults:
  threshold: 0.6
  classes: [person, car]
cameras:
  front:
    source: rtsp://viewer:${FRONT_PASSWORD}@192.168.1.20/stream1
    record: recordings/front.mp4
    detections: recordings/front.jsonl
  garage:
    source: /dev/video0
    threshold: 0.7
    classes: [dog]
  demo:
    source: clip.mp4
    loop: true
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cameras.yaml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str, env=None) -> str:
    with pytest.raises(SettingsError) as info:
        load_camera_file(write(tmp_path, text), env=env if env is not None else {})
    assert info.value.exit_code == ExitCode.USAGE
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_camera_file_becomes_frozen_settings(tmp_path):
    loaded = load_camera_file(write(tmp_path, GOOD), env={"FRONT_PASSWORD": "pw"})
    assert loaded.triton == (Target("localhost", 8001),) and loaded.metrics_port == 9108
    front, garage, demo = loaded.cameras
    assert front.name == "front" and front.source == "rtsp://viewer:pw@192.168.1.20/stream1"
    assert front.record == tmp_path / "recordings" / "front.mp4"  # relative to the file's folder
    assert front.selection == Selection(0.6, ("person", "car"))  # from the defaults
    assert garage.selection == Selection(0.7, ("dog",))  # the camera's own values win
    assert demo.loop and not front.loop
    assert demo.source == str(tmp_path / "clip.mp4") and garage.source == "/dev/video0"  # files: file's folder
    with pytest.raises(AttributeError):
        front.name = "x"  # frozen


def test_flags_are_defaults_below_the_file(tmp_path):
    text = "cameras:\n  a:\n    source: x.mp4\n  b:\n    source: y.mp4\n    threshold: 0.9\n"
    a, b = load_camera_file(write(tmp_path, text), env={}, base=Selection(0.3, ("cat",))).cameras
    assert a.selection == Selection(0.3, ("cat",))
    assert b.selection == Selection(0.9, ("cat",))


@pytest.mark.parametrize("text, expected", [
    ("cameras:\n  front:\n    source: a.mp4\n    threshold: 1.5\n",
     "cameras.front.threshold: input should be less than or equal to 1 (got 1.5)"),
    ("cameras:\n  front:\n    source: a.mp4\n    treshold: 0.5\n", "cameras.front.treshold: unknown key"),
    ("cameras:\n  front:\n    record: a.mp4\n", "cameras.front.source: missing (required)"),
    ("cameras:\n  front:\n    source: a.mp4\n    loop: sometimes\n", "cameras.front.loop:"),
    ("metrics_port: 70000\ncameras:\n  front:\n    source: a.mp4\n", "metrics_port: input should be less"),
    ("defaults:\n  threshold: -1\ncameras:\n  front:\n    source: a.mp4\n", "defaults.threshold:"),
    ("camera:\n  front:\n    source: a.mp4\n", "cameras: the camera list is empty"),
    ("cameras: {}\n", "cameras: the camera list is empty"),
    ("", "the camera file is empty"),
    ("cameras:\n  - source: a.mp4\n", "not a list"),
    ("cameras:\n  front:\n    source: a.mp4\n  front:\n    source: b.mp4\n", "line 4: duplicate key 'front'"),
    ("cameras:\n  'front door':\n    source: a.mp4\n", "camera name 'front door' must be"),
    ("cameras:\n  front: [\n", "not valid YAML"),
    ("cameras:\n  front:\n    source: rtsp://u:${NOPE}@h/s\n",
     "cameras.front.source: environment variable NOPE is not set"),
])
def test_bad_camera_files_name_the_camera_and_the_field(tmp_path, text, expected):
    assert expected in error_of(tmp_path, text)


def test_a_missing_variable_never_shows_the_other_secrets(tmp_path):
    text = "cameras:\n  a:\n    source: rtsp://u:${PW}@h/s\n  b:\n    source: rtsp://u:${MISSING}@h/s\n"
    message = error_of(tmp_path, text, env={"PW": "top-secret"})
    assert "MISSING" in message and "top-secret" not in message


def test_quick_cameras_are_named_cam1_cam2(tmp_path):
    cams = quick_cameras(["rtsp://a/1", "0"], tmp_path, Selection(), None, 5)
    assert [c.name for c in cams] == ["cam1", "cam2"]
    # --out-dir records in 60 s segments by default: the camera's record is its segment folder
    assert cams[1].record == tmp_path / "cam2" and cams[1].detections == tmp_path / "cam2.jsonl"
    assert cams[1].segment == 60 and cams[1].retain is None
    assert all(c.max_frames == 5 for c in cams)
    one_file = quick_cameras(["rtsp://a/1"], tmp_path, Selection(), None, None, segment=0)[0]
    assert one_file.record == tmp_path / "cam1.mp4" and one_file.segment is None


def test_watch_cameras_flags_fill_what_the_file_leaves_unset(tmp_path):
    path = write(tmp_path, "triton: h:8001\ncameras:\n  a:\n    source: rtsp://h/a\n    hold_detections: 1\n"
                           "  b:\n    source: rtsp://h/b\n    threshold: 0.7\n")
    found = watch_cameras([str(path)], None, Selection(0.4, ("cat",)), hold=5.0, max_frames=9)
    a, b = found.cameras
    assert found.triton == (Target("h", 8001),) and found.path == path
    assert (a.hold_detections, b.hold_detections) == (1, 5.0)  # the file's own value wins
    assert (a.selection, b.selection) == (Selection(0.4, ("cat",)), Selection(0.7, ("cat",)))
    assert a.max_frames == b.max_frames == 9


def test_watch_cameras_from_sources_and_their_usage_errors(tmp_path):
    found = watch_cameras(["rtsp://h/a", "0"], tmp_path, Selection(), None, None)
    assert [c.name for c in found.cameras] == ["cam1", "cam2"] and found.triton is None
    path = write(tmp_path, GOOD)
    with pytest.raises(SettingsError, match="not both"):
        watch_cameras([str(path), "rtsp://h/a"], None, Selection(), None, None)
    with pytest.raises(SettingsError, match="--out-dir is for a list of sources"):
        watch_cameras([str(path)], tmp_path, Selection(), None, None)
    with pytest.raises(SettingsError, match="no camera file at"):
        watch_cameras([str(tmp_path / "nope.yaml")], None, Selection(), None, None)
    with pytest.raises(SinkError, match="does not exist"):
        watch_cameras(["rtsp://h/a"], tmp_path / "missing", Selection(), None, None)


def run_watch(*args):
    return CliRunner().invoke(cli, ["watch", *map(str, args)])


def test_watch_rejects_a_bad_file_with_exit_2_before_connecting(tmp_path):
    path = write(tmp_path, "cameras:\n  front:\n    source: rtsp://10.255.255.1/x\n    threshold: 2\n")
    result = run_watch(path)
    assert result.exit_code == 2
    assert "cameras.front.threshold" in result.output and "Traceback" not in result.output


def test_two_cameras_recording_to_one_file_is_an_output_error(tmp_path):
    path = write(tmp_path, "cameras:\n  a:\n    source: rtsp://127.0.0.1:9/x\n    record: same.mp4\n"
                           "  b:\n    source: rtsp://127.0.0.1:9/y\n    record: same.mp4\n")
    result = run_watch(path)
    assert result.exit_code == 5, result.output
    assert "cameras.b.record and cameras.a.record both write" in result.output


def test_a_record_path_in_a_missing_folder_is_an_output_error(tmp_path):
    path = write(tmp_path, "cameras:\n  a:\n    source: rtsp://127.0.0.1:9/x\n    record: nope/a.mp4\n")
    result = run_watch(path)
    assert result.exit_code == 5, result.output
    assert "cameras.a.record:" in result.output and "does not exist" in result.output


def test_a_camera_file_and_sources_together_are_a_usage_error(tmp_path):
    path = write(tmp_path, GOOD)
    result = run_watch(path, "rtsp://a/1")
    assert result.exit_code == 2 and "not both" in result.output


def test_dns_refresh_comes_from_the_flag_else_the_camera_file_else_30_s(tmp_path):
    from streamer.settings import dns_refresh_over_file

    found = load_camera_file(write(tmp_path, "triton: dns:///pods:8001\ndns_refresh: 2.5\n"
                                             "cameras:\n  a:\n    source: x.mp4\n"), env={})
    assert found.dns_refresh == 2.5
    assert dns_refresh_over_file(found, None) == 2.5 and dns_refresh_over_file(found, 7.0) == 7.0
    plain = load_camera_file(write(tmp_path, "cameras:\n  a:\n    source: x.mp4\n"), env={})
    assert dns_refresh_over_file(plain, None) == 30.0
    assert "dns_refresh: input should be greater than 0 (got 0)" in error_of(
        tmp_path, "dns_refresh: 0\ncameras:\n  a:\n    source: x.mp4\n")


@pytest.mark.parametrize("command", ["run", "watch"])
@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_dns_refresh_must_be_a_positive_number_of_seconds(command, value):
    result = CliRunner().invoke(cli, [command, "--triton", "dns:///pods:8001", "--dns-refresh", value, "x.mp4"])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--dns-refresh'" in result.output and "Traceback" not in result.output


def test_the_dns_refresh_reaches_the_pool():
    from streamer.runner import inference_for
    from streamer.settings import InferenceSettings, ServerSettings
    from streamer.triton import parse_targets

    server = ServerSettings(triton=parse_targets("dns:///pods:8001"), dns_refresh=2.5)
    assert inference_for(server, None, None, InferenceSettings(), False, print).refresh == 2.5
    assert inference_for(ServerSettings(triton=parse_targets("a:1,b:2")), None, None, InferenceSettings(), False,
                         print).refresh == 30.0
