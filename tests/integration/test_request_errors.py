"""Per-request errors from a real server are tied to their frames.

A model that raises on white frames, served by the real local Triton: Triton answers those
requests with an error that carries no request id, on a stream that stays open. The run
must still mark exactly those frames as failed, write them unannotated, and keep every
frame in order.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import pytest

from streamer import contract
from streamer.render import color_for

from ..conftest import serving
from ..helpers import frame_image, read_jsonl, read_video, streamer, write_clip

pytestmark = pytest.mark.slow

WHITE = {3, 7, 8, 15}


@pytest.fixture(scope="module")
def faulty_server(tmp_path_factory):
    import torch

    from streamer.export import save_model

    class RaisesOnWhite(torch.nn.Module):
        def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            if bool(image.mean() > 0.97):
                raise RuntimeError("white frame")
            h = float(image.size(1))
            boxes = torch.tensor([[60.0, 40.0, 120.0, h - 1.0]])  # clear of the index code
            return boxes, torch.tensor([1], dtype=torch.int64), torch.tensor([0.9])

    repo = tmp_path_factory.mktemp("faulty_repo")
    (repo / "fasterrcnn" / "1").mkdir(parents=True)
    names = ["__background__", "person"] + [f"c{i}" for i in range(2, 91)]
    save_model(torch.jit.script(RaisesOnWhite()), repo / "fasterrcnn" / "1" / "model.pt", dict(
        arch="raises-on-white", weights="none", untrained=True, class_names=names, min_size=0, max_size=0,
        proposals=0, box_score_thresh=0.0))
    (repo / "fasterrcnn" / "config.pbtxt").write_text(contract.render_config())
    yield from serving(repo)


def white_or_coded(index, width, height):
    if index in WHITE:
        return np.full((height, width, 3), 255, np.uint8)
    return frame_image(index, width, height)


@pytest.mark.parametrize("in_flight,tracking", [("1", ()), ("2", ()), ("5", ()), ("2", ("--no-track",))])
def test_failed_frames_are_written_unannotated_and_counted(in_flight, tracking, tmp_path, faulty_server):
    n = 20
    clip = write_clip(tmp_path / "in.mp4", n, image_fn=white_or_coded)
    out, jsonl = tmp_path / "out.mp4", tmp_path / "d.jsonl"
    result = streamer("run", clip, "--out", out, "--detections", jsonl, "--triton", faulty_server.grpc_url,
                      "--in-flight", in_flight, *tracking)

    assert result.returncode == 6, result.stderr
    assert f"read {n}, inferred {n - len(WHITE)}, written {n}, failed {len(WHITE)}" in result.stdout
    assert "white frame" in result.stderr  # the server's own reason reaches the user
    records = read_jsonl(jsonl)
    assert [r["frame"] for r in records] == list(range(n))
    assert {r["frame"] for r in records if r["status"] == "failed"} == WHITE
    assert all(len(r["detections"]) == 1 for r in records if r["status"] == "ok")
    frames = read_video(out)
    assert len(frames.images) == n
    for k, image in enumerate(frames.images):
        if k in WHITE:
            assert image.mean() > 250  # written as it came: unannotated
        else:
            assert frames.codes[k] == k
            edge = image[60:100, 60:62].astype(int).mean(axis=(0, 1))  # the "person" box's left edge
            [det] = records[k]["detections"]
            # drawn in its colour: its track's (tracking is on by default), red for "person" with --no-track
            expected = color_for(det["track_id"]) if "track_id" in det else color_for(det["label"])
            assert tracking != ("--no-track",) or (edge[0] > 180 and edge[1] < 90 and edge[2] < 90), edge
            assert np.abs(edge - np.array(expected)).max() < 60, (edge, expected)


def test_server_stays_up_after_request_errors(faulty_server):
    from streamer.triton import TritonClient

    with TritonClient(faulty_server.grpc_url) as client:
        assert client.ready()
        assert len(client.infer(frame_image(0))) == 1
