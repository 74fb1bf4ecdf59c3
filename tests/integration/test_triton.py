"""The real local Triton server: the Python-backend twin, parity with TorchScript in-process,
variable N, and the client's errors for missing servers, models and contracts."""

from __future__ import annotations

import json
import shutil
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from streamer import contract
from streamer import server as server_module
from streamer.errors import ModelMismatch, ModelNotReady, PortInUse, ServerUnavailable
from streamer.server import EmbeddedServer, EmbeddedServerSettings, free_port, start_on_free_ports
from streamer.triton import TritonClient, to_input

from ..conftest import SERVER_THREADS, start_server
from ..helpers import frame_image, kill_server

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.mp4"


def served_config(server) -> dict:
    with urllib.request.urlopen(f"{server.http_url}/v2/models/{contract.MODEL_NAME}/config", timeout=10) as r:
        return json.loads(r.read())


def io_of(config_json: dict):
    def norm(tensors):
        return [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in tensors]

    return norm(config_json["input"]), norm(config_json["output"])


def test_twin_serves_the_committed_contract_through_the_python_backend(server_v2, repo_v2):
    served = served_config(server_v2)
    assert served["backend"] == "python"
    assert served["name"] == contract.MODEL_NAME
    exported = contract.read_config(repo_v2 / "fasterrcnn" / "config.pbtxt")
    assert exported.platform == "pytorch_libtorch"
    expected_inputs = [(t.name, contract.mc.DataType.Name(t.data_type), list(t.dims)) for t in exported.input]
    expected_outputs = [(t.name, contract.mc.DataType.Name(t.data_type), list(t.dims)) for t in exported.output]
    assert io_of(served) == (expected_inputs, expected_outputs)
    with TritonClient(server_v2.grpc_url) as client:
        info = client.check()
    assert info.arch == "fasterrcnn_resnet50_fpn_v2" and info.untrained
    assert info.class_names[1] == "person" and len(info.class_names) == 91


def sample_frame() -> np.ndarray:
    from streamer.doctor import first_frame

    return first_frame(SAMPLE)


def test_triton_output_equals_in_process_torchscript(server_v2, repo_v2):
    import torch

    from streamer.export import load_scripted

    image = sample_frame()
    with TritonClient(server_v2.grpc_url) as client:
        remote = client.infer(image)
    torch.set_num_threads(SERVER_THREADS)
    model = load_scripted(repo_v2 / "fasterrcnn" / "1" / "model.pt")
    with torch.inference_mode():
        boxes, labels, scores = model(torch.from_numpy(to_input(image)))
    assert len(remote) > 0
    assert remote.boxes.shape == tuple(boxes.shape)
    np.testing.assert_array_equal(remote.labels, labels.numpy())
    np.testing.assert_allclose(remote.boxes, boxes.numpy(), atol=1e-3)
    np.testing.assert_allclose(remote.scores, scores.numpy(), atol=1e-5)


def test_number_of_detections_varies_with_the_frame(server_v2):
    frame = sample_frame()
    crops = [frame, frame[:120, :160], frame[200:260, 100:400], frame_image(3)]
    counts = []
    with TritonClient(server_v2.grpc_url) as client:
        for image in crops:
            dets = client.infer(np.ascontiguousarray(image))
            assert dets.boxes.shape == (len(dets), 4) and dets.labels.shape == dets.scores.shape == (len(dets),)
            assert dets.labels.dtype == np.int64 and dets.scores.dtype == np.float32
            counts.append(len(dets))
    assert len(set(counts)) > 1, counts


def test_empty_image_gives_no_detections_and_server_stays_ready(server_mobilenet):
    with TritonClient(server_mobilenet.grpc_url) as client:
        dets = client.infer(np.zeros((0, 0, 3), np.uint8))
        assert len(dets) == 0
        assert client.ready()


def test_no_server_is_a_clear_error():
    with TritonClient(f"127.0.0.1:{free_port()}", timeout=3) as client:
        with pytest.raises(ServerUnavailable, match="no Triton server answers"):
            client.check()


def test_server_without_the_model(server_mobilenet):
    with TritonClient(server_mobilenet.grpc_url, model="yolo") as client:
        with pytest.raises(ModelNotReady, match="does not serve a ready model 'yolo'.*fasterrcnn READY"):
            client.check()


def test_model_whose_outputs_break_the_contract(repo_mobilenet, tmp_path):
    repo = tmp_path / "repo"
    model_dir = repo / "fasterrcnn"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.pt").symlink_to(repo_mobilenet / "fasterrcnn" / "1" / "model.pt")
    text = (repo_mobilenet / "fasterrcnn" / "config.pbtxt").read_text()
    (model_dir / "config.pbtxt").write_text(text.replace("dims: [ -1, 4 ]", "dims: [ -1, 5 ]"))
    server = start_server(repo)
    try:
        with TritonClient(server.grpc_url) as client:
            with pytest.raises(ModelMismatch, match=r"output__0 has dims \[-1, 5\], expected \[-1, 4\]"):
                client.check()
    finally:
        server.stop()
        server.cleanup()
    shutil.rmtree(repo)


def test_a_port_taken_after_the_check_is_port_in_use_and_free_ports_are_picked_again(repo_empty, monkeypatch):
    """Ports are checked, then tritonserver binds them: another process may take one in between.
    The server's bind failure is PortInUse (as a port seen taken by the check is), not a generic
    start error, and start_on_free_ports picks other ports on PortInUse and starts."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with monkeypatch.context() as race:
            race.setattr(server_module, "port_in_use", lambda host, p: False)  # free when checked
            lost = EmbeddedServer(EmbeddedServerSettings(
                repo=repo_empty, grpc_port=port, http_port=free_port(), metrics_port=free_port(), threads=1,
                startup_timeout=120))
            with pytest.raises(PortInUse) as caught:
                lost.start()
            lost.cleanup()
        assert f"127.0.0.1:{port}" in str(caught.value) and "already in use" in str(caught.value)
        assert lost.proc is None, "no server process is left behind"

        picks = iter([port])  # the first pick is the taken port; every later pick is really free
        real_free_port = server_module.free_port
        monkeypatch.setattr(server_module, "free_port", lambda host="127.0.0.1": next(picks, None) or real_free_port())
        server = start_on_free_ports(repo_empty, threads=1, startup_timeout=120)
        try:
            assert server.ready() and port not in (server.settings.grpc_port, server.settings.http_port)
        finally:
            kill_server(server)  # nothing to finish: no graceful unload to wait for
            server.stop()
            server.cleanup()
