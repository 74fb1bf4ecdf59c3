"""`--hold-detections 0` live, with the tracker and without it (`--no-track`): every answer arrives
after its own frame was shown, so each is drawn on the first frame shown after it arrives and on
no other. Read back from the recording (compared with the camera's own pictures): frames with
boxes drawn on them are there, and never more than there were answers.

The sprite detector (tests/sprites.py) made slow without using CPU (Triton's batcher holds each
lone request), so answers are few and each one late.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamer.server import start_on_free_ports

from .. import sprites as S
from ..cameras import RtspCamera
from ..helpers import read_video, streamer

pytestmark = pytest.mark.slow

FRAMES = 100  # 4 s of the 25 fps camera
DELAY_US = 300_000  # about 0.3 s an answer


@pytest.fixture(scope="module")
def slow_sprites(tmp_path_factory):
    repo = S.export_sprites(tmp_path_factory.mktemp("repo_hold"), max_queue_delay_us=DELAY_US)
    server = start_on_free_ports(repo, threads=1, startup_timeout=300)
    yield server
    server.stop()
    server.cleanup()


@pytest.fixture(scope="module")
def scene_clip(tmp_path_factory):
    scene = S.camera(FRAMES + 20)
    clip = tmp_path_factory.mktemp("hold_clip") / "camera.mp4"
    S.write_scene(clip, scene)
    return clip, S.render(scene)[0]


def boxes_drawn(recorded: np.ndarray, source: np.ndarray) -> bool:
    """The recorded frame differs from the camera's own picture by drawn lines and labels, not only
    by the two H.264 encodes it went through."""
    far = np.abs(recorded.astype(int) - source.astype(int)).max(axis=2) > 120
    return int(far.sum()) > 40


@pytest.mark.parametrize("flags", [(), ("--no-track",)], ids=["tracking", "no-track"])
def test_hold_zero_draws_each_answer_on_one_shown_frame(tmp_path, slow_sprites, scene_clip, flags):
    clip, pictures = scene_clip
    out, summary = tmp_path / "rec.mp4", tmp_path / "summary.json"
    with RtspCamera(clip) as cam:
        result = streamer("run", cam.url, "--triton", slow_sprites.grpc_url, "--max-frames", FRAMES, "--out", out,
                          "--summary", summary, "--hold-detections", "0", *flags, timeout=240)
    assert result.returncode == 0, result.stderr
    frames = json.loads(summary.read_text())["streams"][0]["frames"]
    assert frames["shown"] == FRAMES and frames["inferred"] >= 2, frames
    images = read_video(out).images
    assert len(images) == FRAMES  # the camera serves its clip from frame 0: recorded frame i is picture i
    drawn = [i for i, image in enumerate(images) if boxes_drawn(image, pictures[i])]
    assert drawn, "no shown frame has boxes: --hold-detections 0 drew nothing"
    assert len(drawn) <= frames["inferred"], (drawn, frames)
