"""`streamer run`'s model and transport choice against a real server: shared memory refused
(one warning under auto, exit 4 under --transport shm), a model the server lacks, and the
regions of a SIGKILLed client removed by the next run."""

from __future__ import annotations

import os
import signal

import pytest
from click.testing import CliRunner

from streamer.triton import shm
from streamer.cli import cli

from ..helpers import (children, inference_count, owned_by, region_files, registered, start_streamer, streamer,
                       wait_until, write_clip)
from .test_run_file import accounting

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["auto", "shm"])
def test_full_dev_shm(mode, tmp_path, server_empty, monkeypatch):
    clip = write_clip(tmp_path / "in.mp4", 6)
    monkeypatch.setattr(shm, "free_bytes", lambda directory=shm.SHM_DIR: 0)
    result = CliRunner().invoke(cli, ["run", str(clip), "--detections", str(tmp_path / "d.jsonl"),
                                      "--triton", server_empty.grpc_url, "--transport", mode])
    warnings = [ln for ln in result.stderr.splitlines() if "shared memory" in ln]
    if mode == "auto":
        assert result.exit_code == 0, result.output
        assert len(warnings) == 1 and warnings[0].startswith("WARNING:") and "over gRPC" in warnings[0]
        assert "over grpc" in result.stderr
        assert accounting(result.stdout) == {"read": 6, "inferred": 6, "written": 6, "failed": 0}
    else:
        assert result.exit_code == 4, result.output
        assert warnings == [result.stderr.strip()] and warnings[0].startswith("error: --transport shm:")
    assert not region_files(os.getpid())


def test_a_model_the_server_lacks_lists_what_it_has(tmp_path, server_empty):
    clip = write_clip(tmp_path / "in.mp4", 2)
    result = streamer("run", clip, "--triton", server_empty.grpc_url, "--model", "yolo", timeout=120)
    assert result.returncode == 4
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "does not serve a ready model 'yolo'" in lines[0]
    assert "Traceback" not in result.stderr
    assert "fasterrcnn READY" in lines[0] and "--model" in lines[0]


def test_regions_of_a_sigkilled_run_are_removed_by_the_next_run(tmp_path, server_empty):
    url = server_empty.grpc_url
    clip = write_clip(tmp_path / "in.mp4", 300)
    start = inference_count(server_empty.http_url)
    proc = start_streamer("run", clip, "--detections", tmp_path / "d.jsonl", "--triton", url)
    try:
        wait_until(lambda: inference_count(server_empty.http_url) >= start + 10, 120, what="10 frames inferred")
        files = region_files(proc.pid)
        assert files and owned_by(registered(url), proc.pid)
    finally:
        # SIGKILL runs no cleanup. Its shared-memory tracker (a child) would unlink the files
        # itself; it is killed too, as when a whole container or process group dies.
        for pid in [proc.pid] + children(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    assert all(f.exists() for f in files), "left behind by the killed run"

    result = streamer("run", write_clip(tmp_path / "next.mp4", 3), "--triton", url, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "over shm" in result.stderr
    assert not any(f.exists() for f in files)
    assert owned_by(registered(url), proc.pid) == [], "the dead run's registrations are gone from the server"
    assert not [n for n in registered(url) if n.startswith(shm.PREFIX)], "and the next run left none of its own"
