"""Zones and lines as settings: a camera file's `zones:` / `lines:` (and under `defaults:`), the
`--zones` file, and every bad case as one line naming `cameras.NAME.zones.ZONE.field` (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from streamer.cli import cli
from streamer.errors import ExitCode
from streamer.events.config import Anchor, Coord
from streamer.settings import SettingsError, load_camera_file, load_zones_file

FILE = """\
defaults:
  lines:
    door: {points: [["50%", 0], ["50%", "100%"]], classes: [person]}
cameras:
  front:
    source: rtsp://cam/1
    zones:
      drive: {points: [[0, 300], [640, 300], [640, 480], [0, 480]], min_frames: 5, loiter_s: 30, anchor: center}
    lines: {}
  back:
    source: rtsp://cam/2
  plain:
    source: rtsp://cam/3
"""


def write(tmp_path: Path, text: str, name: str = "cameras.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_zones_and_lines_per_camera_and_under_defaults(tmp_path):
    cams = {c.name: c for c in load_camera_file(write(tmp_path, FILE), env={}).cameras}
    front, back = cams["front"].regions, cams["back"].regions
    assert [z.name for z in front.zones] == ["drive"] and front.lines == ()  # its own `lines: {}` replaces
    drive = front.zones[0]
    assert drive.min_frames == 5 and drive.loiter_s == 30 and drive.anchor is Anchor.CENTER
    assert drive.points[1] == (Coord(640.0), Coord(300.0))
    assert [ln.name for ln in back.lines] == ["door"] and back.zones == ()
    assert back.lines[0].points[0] == (Coord(0.5, fraction=True), Coord(0.0))
    assert back.lines[0].classes == ("person",)
    assert back.field("lines", "door", "classes").endswith("cameras.yaml: cameras.back.lines.door.classes")


@pytest.mark.parametrize("camera, expected", [
    ("zones: {z: {points: [[0, 0], [10, 0]]}}", "cameras.front.zones.z.points: a zone needs at least 3 points"),
    ("zones: {z: {points: [[0, 0], [9, 9], [9, 0], [0, 9]]}}", "cameras.front.zones.z.points: the polygon crosses"),
    ("lines: {l: {points: [[1, 1], [1, 1]]}}", "cameras.front.lines.l.points: the line's two points are the same"),
    ("lines: {l: {points: [[1, 1], [1, \"1\"]]}}", "cameras.front.lines.l.points[1]: a coordinate is"),
    ("lines: {l: {points: [[1, 1], [2, 2]], anchor: feet}}", "cameras.front.lines.l.anchor: input should be"),
    ("lines: {l: {points: [[1, 1], [2, 2]], colour: red}}", "cameras.front.lines.l.colour: unknown key"),
    ("lines: {l: {points: [[1, 1], [2, yes]]}}", "cameras.front.lines.l.points[1]: a coordinate is"),
    ("zones: {z: {points: [[0, 0], [9, 0], [0, 9]], loiter_s: 0}}", "cameras.front.zones.z.loiter_s: input should"),
    ("zones: {z: {points: [[0, 0], [9, 0], [0, 9]], min_frames: 0}}", "cameras.front.zones.z.min_frames: input sh"),
    ("lines: {\"a b\": {points: [[1, 1], [2, 2]]}}", "cameras.front.lines.a b: the name must be"),
    ("track: false\n    lines: {l: {points: [[1, 1], [2, 2]]}}", "cameras.front: zones and lines count tracked"),
])
def test_bad_zones_and_lines_name_the_camera_and_the_field(tmp_path, camera, expected):
    text = f"cameras:\n  front:\n    source: rtsp://cam/1\n    {camera}\n"
    with pytest.raises(SettingsError) as info:
        load_camera_file(write(tmp_path, text), env={})
    message = str(info.value)
    assert info.value.exit_code == ExitCode.USAGE and "\n" not in message
    assert expected in message and message.startswith(str(tmp_path / "cameras.yaml"))


def test_a_zones_file(tmp_path):
    found = load_zones_file(write(tmp_path, "lines:\n  door: {points: [[330, 0], [330, 480]]}\n", "z.yaml"))
    assert [ln.name for ln in found.lines] == ["door"] and found.zones == ()
    for text, expected in [("", "a zones file is a mapping with `zones:` and/or `lines:`"),
                           ("lines: {}\n", "a zones file is a mapping"),
                           ("cameras: {}\n", "a zones file is a mapping"),
                           ("lines: {d: {points: [[0, 0], [1, 1]]}}\nzone: {}\n", "zone: unknown key"),
                           ("lines: [1\n", "not valid YAML")]:
        with pytest.raises(SettingsError, match=expected):
            load_zones_file(write(tmp_path, text, "z.yaml"))
    with pytest.raises(SettingsError, match="cannot read the zones file"):
        load_zones_file(tmp_path / "missing.yaml")


def test_run_refuses_a_bad_zones_file_and_zones_without_tracking_before_anything_starts(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    bad = write(tmp_path, "zones: {a: {points: [[0, 0], [1, 1]]}}\n", "z.yaml")
    result = CliRunner().invoke(cli, ["run", str(clip), "--zones", str(bad), "--triton", "127.0.0.1:1"])
    assert result.exit_code == 2 and "zones.a.points: a zone needs at least 3 points" in result.output
    good = write(tmp_path, "lines: {d: {points: [[0, 0], [1, 1]]}}\n", "g.yaml")
    result = CliRunner().invoke(cli, ["run", str(clip), "--zones", str(good), "--no-track", "--triton", "127.0.0.1:1"])
    assert result.exit_code == 2 and "--zones counts tracked objects: drop --no-track" in result.output
    result = CliRunner().invoke(cli, ["run", str(clip), "--events", str(tmp_path / "e.jsonl"), "--no-track",
                                      "--triton", "127.0.0.1:1"])
    assert result.exit_code == 2 and "events follow tracked objects" in result.output
