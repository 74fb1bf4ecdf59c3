"""What runs do with a model's answers, against a real Triton serving a scripted model under the
real contracts (tests/sprites.py's configs, both models): the sprite detector, made slow without
using CPU (Triton's batcher holds each lone request about 0.3 s, so every answer is late), and
broken: every answer also carries a box that is NaN and one scored +inf.

- `doctor` says the model is broken; a live run with the page open drops those boxes where the
  answers are decoded (counted, logged once, noted at the end), and the page keeps working:
  `/api/state` answers, pages that come and go never use up the viewer slots (`--no-track`:
  the boxes as the model gave them, where nothing else would hide a bad one).
- `--hold-detections 0`, with the tracker and without it: each answer, which arrives after its
  own frame was shown, is drawn on the first frame shown after it and on no other. Read back
  from the recording (compared with the camera's own pictures): frames with boxes drawn on
  them are there, and never more than there were answers.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

import pytest
import torch

from streamer.server import free_port, start_on_free_ports

from .. import sprites as S
from ..cameras import RtspCamera, Run, camera_clip
from ..helpers import read_code, read_jsonl, read_video, streamer, wait_until
from ..webclient import Socket, get

pytestmark = pytest.mark.slow

NAN, INF = float("nan"), float("inf")
DELAY_US = 300_000  # about 0.3 s an answer (fasterrcnn_u8, what runs use)
HOLD_FRAMES = 100  # 4 s of the 25 fps camera


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
    repo = S.export_sprites(tmp_path_factory.mktemp("repo_broken"), max_queue_delay_us=DELAY_US, modules=modules)
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
                cameras = json.loads(body)["cameras"] if status == 200 else []
                return bool(cameras) and cameras[0]["detections_count"] > 0

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


@pytest.fixture(scope="module")
def scene_clip(tmp_path_factory):
    scene = S.camera(HOLD_FRAMES + 20)
    clip = tmp_path_factory.mktemp("hold_clip") / "camera.mp4"
    S.write_scene(clip, scene)
    return clip, S.render(scene)[0]


def boxes_drawn(recorded: np.ndarray, source: np.ndarray) -> bool:
    """The recorded frame differs from the camera's own picture by drawn lines and labels, not only
    by the two H.264 encodes it went through."""
    far = np.abs(recorded.astype(int) - source.astype(int)).max(axis=2) > 120
    return int(far.sum()) > 40


@pytest.mark.parametrize("flags", [(), ("--no-track",)], ids=["tracking", "no-track"])
def test_hold_zero_draws_each_answer_on_one_shown_frame(tmp_path, broken_server, scene_clip, flags):
    clip, pictures = scene_clip
    out, summary = tmp_path / "rec.mp4", tmp_path / "summary.json"
    with RtspCamera(clip) as cam:
        result = streamer("run", cam.url, "--triton", broken_server.grpc_url, "--max-frames", HOLD_FRAMES,
                          "--out", out, "--summary", summary, "--hold-detections", "0", *flags, timeout=240)
    assert result.returncode == 0, result.stderr
    frames = json.loads(summary.read_text())["streams"][0]["frames"]
    assert frames["inferred"] >= 2, frames
    images = read_video(out).images
    assert len(images) == frames["shown"]
    # the camera serves its clip from frame 0; each picture carries its index (top left)
    drawn = [i for i, image in enumerate(images) if boxes_drawn(image, pictures[read_code(image)])]
    assert drawn, "no shown frame has boxes: --hold-detections 0 drew nothing"
    assert len(drawn) <= frames["inferred"], (drawn, frames)
