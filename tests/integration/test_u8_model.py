"""The batchable model fasterrcnn_u8 against the seed's fasterrcnn, in-process and through the
real local Triton: same detections on real frames, batches that really form (Triton's own
statistics), each frame its own answer, a failing frame that fails alone, the warm-up, and the
frozen export against the plain scripted module in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Tuple

import av
import numpy as np
import pytest

from streamer import contract

from ..conftest import SERVER_THREADS, V2_EXPORT, serving
from ..helpers import frame_image, wait_until

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.mp4"
SEED, U8 = contract.SEED, contract.U8
# (boxes [N, 4], labels [N], scores [N]) of one frame
Answer = Tuple[np.ndarray, np.ndarray, np.ndarray]


def real_frames() -> List[np.ndarray]:
    """Distinct real frames of the sample clip (640x480 RGB), plus one mirrored."""
    with av.open(str(SAMPLE)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    picked = [frames[i] for i in (0, 16, 32, len(frames) - 1)]
    return picked + [np.ascontiguousarray(frames[8][:, ::-1])]


def assert_same(a: Answer, b: Answer, what: str = "") -> None:
    """The issue's tolerance: same count and labels, boxes within 0.5 px, scores within 1e-3."""
    assert len(a[2]) == len(b[2]), f"{what}: {len(a[2])} vs {len(b[2])} detections"
    np.testing.assert_array_equal(a[1], b[1], err_msg=what)
    np.testing.assert_allclose(a[0], b[0], atol=0.5, rtol=0, err_msg=what)
    np.testing.assert_allclose(a[2], b[2], atol=1e-3, rtol=0, err_msg=what)


def unpad(boxes, labels, scores, count) -> List[Answer]:
    """Per frame of a u8 batch: its `count` valid rows (the rest must be zero padding)."""
    answers = []
    for i in range(len(count)):
        n = int(count[i][0])
        assert not np.any(boxes[i, n:]) and not np.any(labels[i, n:]) and not np.any(scores[i, n:])
        answers.append((boxes[i, :n], labels[i, :n], scores[i, :n]))
    return answers


def distinct(answers: List[Answer]) -> bool:
    """No two frames got the same detections (so a swapped answer could not pass)."""
    keys = {(len(s), b.round(1).tobytes()) for b, _, s in answers}
    return len(keys) == len(answers)


# -- in-process --------------------------------------------------------------------------------


def load(repo: Path, name: str):
    import torch
    import torchvision  # noqa: F401  (registers the detection ops)

    torch.set_num_threads(SERVER_THREADS)
    return torch.jit.load(str(repo / name / "1" / contract.MODEL_FILENAME), map_location="cpu")


def run_seed(module, image: np.ndarray) -> Answer:
    import torch

    from streamer.triton import to_input

    with torch.inference_mode():
        return tuple(t.numpy() for t in module(torch.from_numpy(to_input(image))))


def run_u8(module, images: np.ndarray) -> List[Answer]:
    import torch

    with torch.inference_mode():
        return unpad(*(t.numpy() for t in module(torch.from_numpy(np.ascontiguousarray(images)))))


def test_u8_model_equals_the_seed_model_in_process(repo_v2):
    seed, u8 = load(repo_v2, SEED.name), load(repo_v2, U8.name)
    frames = real_frames()
    expected = [run_seed(seed, f) for f in frames]
    assert all(len(e[2]) > 0 for e in expected) and distinct(expected)
    batched = run_u8(u8, np.stack(frames))  # one batch of distinct frames
    for i, frame in enumerate(frames):
        [single] = run_u8(u8, frame[None])
        assert_same(single, expected[i], f"frame {i} alone")
        assert_same(batched[i], expected[i], f"frame {i} in a batch")


def test_u8_model_answers_empty_frames_with_padding(repo_v2):
    u8 = load(repo_v2, U8.name)
    [answer] = run_u8(u8, np.zeros((1, 0, 0, 3), np.uint8))
    assert len(answer[2]) == 0


def v2_model():
    """torchvision's own eager detector, built with the fixture export's settings and seed."""
    from streamer.export import ExportSettings, build_model

    args = dict(zip(V2_EXPORT[::2], V2_EXPORT[1::2]))
    settings = ExportSettings(arch=args["--arch"], weights="random", min_size=int(args["--min-size"]),
                              max_size=int(args["--max-size"]), proposals=int(args["--proposals"]),
                              box_score_thresh=float(args["--box-score-thresh"]))
    model, _, _ = build_model(settings)
    return model


def test_exports_resize_first_and_still_equal_torchvision_on_large_frames(repo_v2):
    """The exported models shrink a frame before normalizing it (ResizeFirstTransform), the
    reverse of torchvision's order: on real frames of 640x480 and 1920x1080 (the sample
    upscaled) both still answer what torchvision's own eager model answers."""
    import torch

    from streamer.triton import to_input

    model = v2_model()
    seed, u8 = load(repo_v2, SEED.name), load(repo_v2, U8.name)
    large = [np.asarray(av.VideoFrame.from_ndarray(f, format="rgb24").reformat(1920, 1080).to_ndarray(
        format="rgb24")) for f in real_frames()[:2]]
    checked = 0
    for i, frame in enumerate(real_frames()[:3] + large):
        with torch.inference_mode():
            [d] = model([torch.from_numpy(to_input(frame))])
        expected = (d["boxes"].numpy(), d["labels"].numpy(), d["scores"].numpy())
        checked += len(expected[2])
        assert_same(run_seed(seed, frame), expected, f"seed model, frame {i} {frame.shape}")
        [got] = run_u8(u8, frame[None])
        assert_same(got, expected, f"u8 model, frame {i} {frame.shape}")
    assert checked > 0


# Run in a fresh interpreter: load model.pt with torch.jit.load (the loader Triton's LibTorch
# backend uses in C++), run the frames, save what it answers.
FRESH_PROCESS = """
import sys, numpy as np, torch, torchvision
torch.set_num_threads(int(sys.argv[4]))
module = torch.jit.load(sys.argv[1], map_location="cpu")
frames = np.load(sys.argv[2])
out = {}
with torch.inference_mode():
    for i, frame in enumerate(frames):
        for k, t in enumerate(module(torch.from_numpy(frame))):
            out[f"{i}_{k}"] = t.numpy()
    out["n_params"] = np.array(len(list(module.parameters())))
np.savez(sys.argv[3], **out)
"""


@pytest.mark.parametrize("served", [SEED, U8], ids=lambda s: s.name)
def test_frozen_export_loads_fresh_and_equals_the_plain_scripted_module(repo_v2, served, tmp_path):
    import torch

    from streamer.export import script
    from streamer.triton import to_input

    # The plain (unfrozen) scripted module of the same settings and seed as the fixture's export.
    plain = script(v2_model(), served)
    frames = real_frames()[:3]
    inputs = np.stack([to_input(f) for f in frames] if served is SEED else [f[None] for f in frames])
    np.save(tmp_path / "frames.npy", inputs)
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(repo_v2 / served.name / "1" / contract.MODEL_FILENAME),
         str(tmp_path / "frames.npy"), str(tmp_path / "out.npz"), str(SERVER_THREADS)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    fresh = np.load(tmp_path / "out.npz")
    assert int(fresh["n_params"]) == 0  # frozen: the weights are constants of the graph
    assert len(list(plain.parameters())) > 0
    torch.set_num_threads(SERVER_THREADS)
    with torch.inference_mode():
        for i, x in enumerate(inputs):
            expected = [t.numpy() for t in plain(torch.from_numpy(x))]
            got = [fresh[f"{i}_{k}"] for k in range(len(expected))]
            if served is U8:
                expected, got = unpad(*expected)[0], unpad(*got)[0]
            assert len(expected[2]) > 0
            assert_same(tuple(got), tuple(expected), f"frame {i}")


# -- through the embedded Triton -------------------------------------------------------------


def stats(server, name: str) -> dict:
    with urllib.request.urlopen(f"{server.http_url}/v2/models/{name}/stats", timeout=10) as resp:
        [model_stats] = json.loads(resp.read())["model_stats"]
    return model_stats


def executions_by_batch_size(server, name: str) -> Dict[int, int]:
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats(server, name)["batch_stats"]}


def settled_executions(server, name: str) -> Dict[int, int]:
    """Execution counts once Triton has recorded every request it answered (it records an
    execution's statistics just after the answer): two reads 0.5 s apart agree."""
    reads = [executions_by_batch_size(server, name)]

    def stable() -> bool:
        time.sleep(0.5)
        reads.append(executions_by_batch_size(server, name))
        return reads[-1] == reads[-2]

    wait_until(stable, timeout=30, interval=0, what=f"{name}'s statistics to settle")
    return reads[-1]


def u8_inputs(frame: np.ndarray):
    import tritonclient.grpc as grpcclient

    tensor = grpcclient.InferInput(U8.input.name, [1, *frame.shape], U8.input.datatype)
    tensor.set_data_from_numpy(np.ascontiguousarray(frame[None]))
    return [tensor]


def u8_answer(result) -> Answer:
    [answer] = unpad(*(result.as_numpy(spec.name) for spec in U8.outputs))
    return answer


def burst(server, frames: List[np.ndarray], timeout: float = 600) -> list:
    """Send every frame to fasterrcnn_u8 at once (async gRPC); (answer or None, error) per frame."""
    import tritonclient.grpc as grpcclient

    results: list = [None] * len(frames)
    done = threading.Semaphore(0)

    def on_result(index):
        def callback(result, error):
            results[index] = (None if error else u8_answer(result), error)
            done.release()
        return callback

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        for i, frame in enumerate(frames):
            client.async_infer(U8.name, u8_inputs(frame), on_result(i), client_timeout=timeout)
        for _ in frames:
            assert done.acquire(timeout=timeout), "Triton did not answer the burst"
    finally:
        client.close()
    return results


def single(server, frame: np.ndarray) -> Answer:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        return u8_answer(client.infer(U8.name, u8_inputs(frame), client_timeout=600))


def test_u8_through_triton_equals_the_seed_model_through_triton(server_v2):
    from streamer.triton import TritonClient

    frames = real_frames()[:3]
    with TritonClient(server_v2.grpc_url, model=SEED.name) as client:  # the seed's model and client
        expected = [client.infer(f) for f in frames]
    for i, frame in enumerate(frames):
        assert len(expected[i]) > 0
        assert_same(single(server_v2, frame), (expected[i].boxes, expected[i].labels, expected[i].scores),
                    f"frame {i}")


def test_same_size_burst_is_batched_and_each_frame_gets_its_own_answer(server_v2):
    frames = real_frames()
    alone = [single(server_v2, f) for f in frames]
    assert distinct(alone) and all(len(a[2]) > 0 for a in alone)
    before = settled_executions(server_v2, U8.name)  # the single requests above all counted
    results = burst(server_v2, frames)
    assert [error for _, error in results] == [None] * len(frames)
    after = {}

    def counted() -> bool:  # Triton records an execution's statistics just after it answers
        after.update(executions_by_batch_size(server_v2, U8.name))
        return sum(size * n for size, n in after.items()) - sum(size * n for size, n in before.items()) >= len(frames)

    wait_until(counted, timeout=30, interval=0.2, what="the burst in Triton's statistics")
    # Triton's dynamic batcher joined requests: some execution ran several frames at once.
    batched = {size: n - before.get(size, 0) for size, n in after.items() if size > 1 and n > before.get(size, 0)}
    assert batched, after
    assert sum(size * n for size, n in after.items()) - sum(size * n for size, n in before.items()) == len(frames)
    for i, (answer, _) in enumerate(results):
        assert_same(answer, alone[i], f"frame {i}")


def test_mixed_size_burst_answers_each_frame(server_v2):
    frames = real_frames()
    sized = [frames[0], frames[1][:240, :320], frames[2], frames[3][:240, :320], frames[4][100:400]]
    sized = [np.ascontiguousarray(f) for f in sized]
    alone = [single(server_v2, f) for f in sized]
    assert distinct(alone)
    results = burst(server_v2, sized)
    for i, (answer, error) in enumerate(results):
        assert error is None, error
        assert_same(answer, alone[i], f"frame {i} ({sized[i].shape})")


# -- a failing frame in a batch ---------------------------------------------------------------------

WHITE = 2  # the frame of the burst that the model refuses


@pytest.fixture(scope="module")
def raising_u8_server(tmp_path_factory):
    """fasterrcnn_u8 whose module raises on white frames (one box per frame otherwise)."""
    import torch

    from streamer.export import save_model

    class RaisesOnWhite(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
            b = images.size(0)
            if bool((images.flatten(1).float().mean(1) > 250).any()):
                raise RuntimeError("white frame")
            boxes = torch.zeros((b, 100, 4))
            boxes[:, 0, 0] = images.flatten(1).float().mean(1)  # each frame's own mean pixel value
            labels = torch.zeros((b, 100), dtype=torch.int64)
            labels[:, 0] = 1
            scores = torch.zeros((b, 100))
            scores[:, 0] = 0.9
            return boxes, labels, scores, torch.ones((b, 1), dtype=torch.int32)

    repo = tmp_path_factory.mktemp("raising_u8")
    (repo / U8.name / "1").mkdir(parents=True)
    names = ["__background__", "person"] + [f"c{i}" for i in range(2, 91)]
    save_model(torch.jit.script(RaisesOnWhite()), repo / U8.name / "1" / contract.MODEL_FILENAME, dict(
        arch="raises-on-white", weights="none", untrained=True, class_names=names, min_size=0, max_size=0,
        proposals=0, box_score_thresh=0.0))
    (repo / U8.name / contract.CONFIG_FILENAME).write_text(contract.render_config(model=U8))
    yield from serving(repo)


def test_a_failing_frame_fails_alone_and_its_batch_mates_get_answers(raising_u8_server):
    frames = [frame_image(i) for i in range(6)]
    frames[WHITE] = np.full_like(frames[0], 255)
    # Retried until Triton has batched the white frame with others (normally the first time).
    for _ in range(3):
        before = executions_by_batch_size(raising_u8_server, U8.name)
        results = burst(raising_u8_server, frames)
        after = executions_by_batch_size(raising_u8_server, U8.name)
        if any(size > 1 and n > before.get(size, 0) for size, n in after.items()):
            break
    else:
        pytest.fail(f"Triton never batched the burst: {after}")
    for i, (answer, error) in enumerate(results):
        if i == WHITE:
            assert answer is None and "white frame" in str(error)
        else:
            assert error is None, error
            assert answer[0][0, 0] == pytest.approx(frames[i].mean(), rel=1e-4)  # its own answer
            assert answer[1].tolist() == [1]


# -- warm-up -------------------------------------------------------------------------------------------


def test_a_fresh_server_warms_both_models_before_it_is_ready(killable_server):
    """Triton runs model_warmup in the Python backend too: before any request, each model has
    executed the configured black frames WARMUP_COUNT times, one frame at a time."""
    for name in (SEED.name, U8.name):
        model_stats = stats(killable_server, name)
        assert int(model_stats["execution_count"]) == contract.WARMUP_COUNT, model_stats
        assert executions_by_batch_size(killable_server, name) == {1: contract.WARMUP_COUNT}
