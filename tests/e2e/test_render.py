"""`streamer render` redraws a real run's log: same frames as the run, no torch, no server."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ..helpers import read_jsonl, streamer
from ..media_inputs import Audio, make_input, read_back

pytestmark = pytest.mark.slow

BLOCKER = """\
import sys

BLOCKED = {blocked!r}


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name in BLOCKED or name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked in this test: render must not need it")
        return None


sys.meta_path.insert(0, Blocker())
"""


def without(tmp_path, *modules) -> dict:
    """An environment in which importing any of `modules` fails (a sitecustomize import hook)."""
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "sitecustomize.py").write_text(BLOCKER.format(blocked=list(modules)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(blocked), env.get("PYTHONPATH", "")])
    return env


def test_render_reproduces_the_run_and_refuses_what_the_log_cannot_give(tmp_path, server_v2):
    clip = make_input(tmp_path / "phone.mp4", count=6, rotation=270, audio=[Audio("pcm_s16le")], format="mov")
    out, jsonl = tmp_path / "run.mp4", tmp_path / "run.jsonl"
    result = streamer("run", clip, "--out", out, "--detections", jsonl, "--threshold", "0.6",
                      "--triton", server_v2.grpc_url)
    assert result.returncode == 0, result.stderr
    assert sum(len(r["detections"]) for r in read_jsonl(jsonl)) > 0

    # no torch; no Triton client or server code (streamer.triton is the only user of tritonclient's
    # client, streamer.server the only way to start a server)
    env = without(tmp_path, "torch", "torchvision", "streamer.triton", "streamer.server", "tritonclient.grpc.aio",
                  "tritonclient.http")
    again = tmp_path / "again.mp4"
    result = streamer("render", clip, "--detections", jsonl, "--out", again, env=env)
    assert result.returncode == 0, result.stderr
    assert "rendered 6 frame(s)" in result.stdout
    run, rendered = read_back(out), read_back(again)
    assert (rendered.width, rendered.height, rendered.rotation) == (run.width, run.height, 0)
    for a, b in zip(run.images, rendered.images):  # same boxes, frame by frame, within encoder noise
        assert np.abs(a.astype(int) - b).mean() < 1.0
    assert [t["codec"] for t in rendered.audio] == ["aac"]
    assert rendered.audio[0]["seconds"] == pytest.approx(run.audio[0]["seconds"], abs=run.audio[0]["frame"])

    higher = tmp_path / "higher.mp4"
    result = streamer("render", clip, "--detections", jsonl, "--out", higher, "--threshold", "0.95", env=env)
    assert result.returncode == 0, result.stderr
    assert len(read_back(higher).images) == 6

    lower = tmp_path / "lower.mp4"
    result = streamer("render", clip, "--detections", jsonl, "--out", lower, "--threshold", "0.3", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --threshold 0.3 is below the log's 0.6")
    assert not lower.exists()

    other = make_input(tmp_path / "other.mp4", count=6)
    result = streamer("render", other, "--detections", jsonl, "--out", lower, env=env)
    assert result.returncode == 3
    assert "does not belong to other.mp4" in result.stderr and "Traceback" not in result.stderr
    assert not lower.exists()
