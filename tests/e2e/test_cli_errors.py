"""Bad input gets one clear line and a documented exit code, never a traceback.

Flags are checked with click's CliRunner; the real command runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import socket
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamer import facts
from streamer.cli import cli
from streamer.server import free_port

from ..helpers import streamer, write_clip

ROOT = Path(__file__).resolve().parents[2]


def one_line_error(result, code: int, *needles: str) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_help_explains_commands_and_exit_codes():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for word in ("export-model", "serve", "run", "detect", "doctor", "Exit codes", "130"):
        assert word in result.output
    run_help = CliRunner().invoke(cli, ["run", "--help"]).output
    for flag in ("--out", "--triton", "--threshold", "--classes", "--detections", "--max-frames", "--overwrite",
                 "--retry-timeout", "Exit codes"):
        assert flag in run_help


@pytest.mark.parametrize("args, message", [
    (["run", "x.mp4", "--threshold", "1.5"], "1.5 is not in the range"),
    (["run", "x.mp4", "--max-frames", "0"], "0 is not in the range"),
    (["run", "x.mp4", "--triton", "http://localhost:8000"], "not a http URL"),
    (["run", "x.mp4", "--triton", "localhost:99999"], "port must be"),
    (["export-model", "--arch", "yolo"], "'yolo' is not one of"),
    (["export-model", "--weights", "nothing.pth"], "not coco, random, or an existing .pth file"),
])
def test_out_of_range_options_are_usage_errors(args, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.fixture
def clip(tmp_path):
    return write_clip(tmp_path / "in.mp4", 3)


def test_missing_file(tmp_path):
    one_line_error(streamer("run", tmp_path / "nope.mp4", "--triton", "127.0.0.1:1"), 3, "no such file")


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    one_line_error(streamer("run", empty, "--triton", "127.0.0.1:1"), 3, "empty (0 bytes)")


def test_not_a_video(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    one_line_error(streamer("run", text, "--triton", "127.0.0.1:1"), 3, "not a video PyAV can read")


def test_truncated_mp4_without_index(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", 30, faststart=False)  # moov at the end
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) // 2])
    one_line_error(streamer("run", clip, "--triton", "127.0.0.1:1"), 3, "moov")


def test_unsupported_url_scheme():
    one_line_error(streamer("run", "ftp://example.com/v.mp4", "--triton", "127.0.0.1:1"), 3,
                   "unsupported source scheme 'ftp://'")


def test_output_folder_missing(clip, tmp_path):
    one_line_error(streamer("run", clip, "--out", tmp_path / "no" / "such" / "o.mp4", "--triton", "127.0.0.1:1"),
                   5, "does not exist")


def test_output_folder_not_writable(clip, tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root ignores permission bits; /proc/sys stops root too
        folder = Path("/proc/sys")
    assert not os.access(folder, os.W_OK)
    one_line_error(streamer("run", clip, "--out", folder / "o.mp4", "--triton", "127.0.0.1:1"), 5,
                   "not writable")


def test_output_is_the_input(clip):
    one_line_error(streamer("run", clip, "--out", clip, "--overwrite", "--triton", "127.0.0.1:1"), 5,
                   "is the input")


def test_output_extension(clip, tmp_path):
    one_line_error(streamer("run", clip, "--out", tmp_path / "o.avi", "--triton", "127.0.0.1:1"), 5, ".mp4")


def test_no_server_at_triton(clip):
    one_line_error(streamer("run", clip, "--triton", f"127.0.0.1:{free_port()}"), 4, "no Triton server answers",
                   "streamer serve")


def test_embedded_server_without_an_exported_model(clip, tmp_path):
    repo = tmp_path / "repo"
    (repo / "fasterrcnn").mkdir(parents=True)
    (repo / "fasterrcnn" / "config.pbtxt").write_text('name: "fasterrcnn"\n')
    one_line_error(streamer("run", clip, "--model-repo", repo), 4, "streamer export-model")


@pytest.mark.slow  # tritonserver starts (and fails to load the model)
def test_embedded_server_with_a_corrupt_model(clip, tmp_path, repo_empty):
    model_dir = tmp_path / "repo" / "fasterrcnn"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text((repo_empty / "fasterrcnn" / "config.pbtxt").read_text())
    model = model_dir / "1" / "model.pt"
    # not even an archive: refused before any server starts, naming the file
    model.write_text("not a TorchScript file")
    one_line_error(streamer("run", clip, "--model-repo", tmp_path / "repo"), 4,
                   f"{model} is not a TorchScript file", "streamer export-model")
    # an archive with the export's facts but no model in it: the server fails to load it
    with zipfile.ZipFile(model, "w") as archive:
        archive.writestr(f"model/extra/{facts.EXTRA_FILE}",
                         json.dumps(facts.read(repo_empty / "fasterrcnn" / "1" / "model.pt")))
    one_line_error(streamer("run", clip, "--model-repo", tmp_path / "repo"), 4,
                   "failed to load 'fasterrcnn'", "streamer export-model", "full log:")


def test_serve_on_a_port_in_use():
    # serve checks its ports before it reads the model: the committed repository is enough (no export)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = streamer("serve", "--model-repo", ROOT / "model_repository", "--grpc-port", port,
                          "--http-port", free_port(), "--metrics-port", free_port(), timeout=60)
    one_line_error(result, 4, f"port {port}", "already in use", "--grpc-port")


def test_detect_missing_and_bad_images(tmp_path):
    one_line_error(streamer("detect", tmp_path / "none.png", "--triton", "127.0.0.1:1"), 3, "no such file")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    one_line_error(streamer("detect", bad, "--triton", "127.0.0.1:1"), 3, "not an image")
