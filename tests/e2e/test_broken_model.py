"""A broken model served by a real Triton: every answer carries boxes and scores that are not
numbers (NaN, inf), exported under the real contracts (tests/sprites.py's configs, both models).

`doctor` says the model is broken; a live run with the page open drops those boxes where the
answers are decoded (counted, logged once, noted at the end), and the page keeps working
(`--no-track`: the boxes as the model gave them, where nothing else would hide a bad one):
`/api/state` answers, pages that come and go never use up the viewer slots.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from streamer.server import free_port, start_on_free_ports

from .. import sprites as S
from ..cameras import RtspCamera, Run, camera_clip
from ..helpers import read_jsonl, streamer, wait_until
from ..webclient import Socket, get

pytestmark = pytest.mark.slow

NAN, INF = float("nan"), float("inf")


def _bad_rows(module: torch.nn.Module) -> None:
    """Two rows a broken model might answer: a NaN box scored 0.95, and a box scored +inf."""
    module.register_buffer("bad_boxes", torch.tensor([[NAN, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]]))
    module.register_buffer("bad_labels", torch.tensor([1, 3], dtype=torch.int64))
    module.register_buffer("bad_scores", torch.tensor([0.95, INF]))


class NanSeed(torch.nn.Module):
    """The sprite detector's boxes, then the two bad rows."""

    def __init__(self):
        super().__init__()
        self.inner = S.SeedSprites()
        _bad_rows(self)

    def forward(self, image: torch.Tensor):
        boxes, labels, scores = self.inner(image)
        return (torch.cat([boxes, self.bad_boxes]), torch.cat([labels, self.bad_labels]),
                torch.cat([scores, self.bad_scores]))


class NanU8(torch.nn.Module):
    """The same under the padded contract: the two bad rows counted in count__3."""

    def __init__(self, k: int):
        super().__init__()
        self.inner = S.U8Sprites(k)
        self.k = k
        _bad_rows(self)

    def forward(self, images: torch.Tensor):
        boxes, labels, scores, count = self.inner(images)
        for i in range(int(images.size(0))):
            n = int(count[i, 0])
            if n + 2 <= self.k:
                boxes[i, n:n + 2] = self.bad_boxes
                labels[i, n:n + 2] = self.bad_labels
                scores[i, n:n + 2] = self.bad_scores
                count[i, 0] = n + 2
        return boxes, labels, scores, count


@pytest.fixture(scope="module")
def broken_server(tmp_path_factory):
    from streamer import contract

    k = contract.DEFAULT_MAX_DETECTIONS
    modules = (torch.jit.script(NanSeed().eval()), torch.jit.script(NanU8(k).eval()))
    repo = S.export_sprites(tmp_path_factory.mktemp("repo_broken"), modules=modules)
    server = start_on_free_ports(repo, threads=1, startup_timeout=300)
    yield server
    server.stop()
    server.cleanup()


def finite_json(state: dict) -> bool:
    return all(math.isfinite(v) for cam in state["cameras"] for d in cam["detections"] for v in d["box"])


def test_doctor_says_a_model_answering_nan_boxes_is_broken(broken_server):
    result = streamer("doctor", "--triton", broken_server.grpc_url, "--model", "fasterrcnn_u8", timeout=180)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "[FAIL] the model is broken" in result.stdout and "not numbers" in result.stdout


def test_a_live_run_drops_them_once_and_the_page_keeps_every_slot(tmp_path, broken_server):
    clip = camera_clip(tmp_path / "camera.mp4", 250)
    port = free_port()
    summary, dets = tmp_path / "summary.json", tmp_path / "d.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "STREAMER_WEB_TOKEN"}
    with RtspCamera(clip) as cam:
        run = Run("run", cam.url, "--triton", broken_server.grpc_url, "--max-frames", 200, "--detections", dets,
                  "--summary", summary, "--web", f"127.0.0.1:{port}", "--web-max-viewers", "2",
                  "--no-track", env=env)  # the model's boxes as they come (a tracker would hide these)
        try:
            def answered() -> bool:
                try:
                    status, _, body = get(port, "/api/state", timeout=2)
                except OSError:
                    return False
                return status == 200 and json.loads(body)["cameras"][0]["detections_count"] > 0

            wait_until(answered, 120, 0.1, "the page to show detections")
            for _ in range(5):  # pages that come and go, more than the slots: none is kept
                with Socket(port) as page:
                    kind, state = page.until(lambda k, v: k == "text", 10, "the state")
                    assert state["type"] == "state" and finite_json(state)
            status, _, body = get(port, "/api/state")
            assert status == 200 and finite_json(json.loads(body))
            assert run.finish() == 0, run.stderr
        finally:
            run.kill()
    warnings = [line for line in run.err_lines if "not numbers (NaN or infinite)" in line]
    assert len(warnings) == 2, run.stderr  # logged once when it happens, and the note at the end
    report = json.loads(Path(summary).read_text())
    assert report["invalid_boxes"] >= 2 * len(read_jsonl(dets)) > 0  # two a frame, every answer
    records = read_jsonl(dets)  # valid JSON: no NaN made it into the log
    assert records and all(r["status"] == "ok" for r in records)
    assert all(math.isfinite(v) for r in records for d in r["detections"] for v in d["box"] + [d["score"]])
