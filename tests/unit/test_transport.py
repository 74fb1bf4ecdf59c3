"""streamer.triton's model codecs and transports, and streamer.triton.shm's region owners, where a real
server cannot show it: a server that refuses client shared memory, a full /dev/shm, a
frame growing past a full /dev/shm mid-run, a non-loopback address.

The scripted peer stands in for tritonclient's InferenceServerClient (given as the `raw` client):
health, model config and shared-memory registration, answering unary infer() with real
InferResult objects. Real-server tests are in tests/integration/test_transport.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import List

import numpy as np
import pytest
from tritonclient.grpc import InferResult, service_pb2
from tritonclient.utils import InferenceServerException

from streamer import contract, facts
from streamer.triton import shm
from streamer.errors import ExitCode
from streamer.states import Transport
from streamer.triton import (OutputCheck, PaddedCodec, SeedCodec, ShmUnavailable, TritonClient, codec_for, is_loopback,
                             parse_outputs)

pytestmark = pytest.mark.timeout(60)


def seed_config():
    return contract.parse_config(facts.merged(contract.render_config(), dict(
        arch=contract.DEFAULT_ARCH, weights="random", untrained=True, class_names=["__background__", "person"],
        min_size=128, max_size=160, proposals=100, box_score_thresh=0.5)))


def seed_result(n: int = 2) -> InferResult:
    boxes = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    tensors = [("output__0", "FP32", boxes), ("output__1", "INT64", np.arange(n, dtype=np.int64)),
               ("output__2", "FP32", np.full(n, 0.9, np.float32))]
    return result_of(tensors)


def result_of(tensors) -> InferResult:
    response = service_pb2.ModelInferResponse(
        model_name="m", id="0",
        outputs=[service_pb2.ModelInferResponse.InferOutputTensor(name=name, datatype=dt, shape=list(arr.shape))
                 for name, dt, arr in tensors],
        raw_output_contents=[arr.tobytes() for _, _, arr in tensors],
    )
    return InferResult(response)


class Peer:
    """A scripted Triton: serves the seed model; registration refused when `refuse` is set."""

    def __init__(self, refuse: str = ""):
        self.refuse = refuse
        self.registered: dict = {}
        self.register_calls = 0
        self.requests: List[list] = []

    def is_server_live(self, **kw):
        return True

    def is_server_ready(self, **kw):
        return True

    def is_model_ready(self, name, **kw):
        return name == contract.MODEL_NAME

    def get_model_config(self, name, **kw):
        return service_pb2.ModelConfigResponse(config=seed_config())

    def get_system_shared_memory_status(self, **kw):
        return service_pb2.SystemSharedMemoryStatusResponse()

    def register_system_shared_memory(self, name, key, byte_size, **kw):
        self.register_calls += 1
        if self.refuse:
            raise InferenceServerException(msg=self.refuse)
        self.registered[name] = byte_size

    def unregister_system_shared_memory(self, name="", **kw):
        self.registered.pop(name, None)

    def infer(self, model_name, inputs, outputs=None, **kw):
        self.requests.append(inputs)
        return seed_result()

    def close(self):
        pass


def client_with(peer: Peer, url: str = "127.0.0.1:1", **kwargs) -> tuple:
    logs: List[str] = []
    client = TritonClient(url, log=logs.append, raw=peer, **kwargs)
    return client, logs


def sent_over_shm(inputs) -> bool:
    return "shared_memory_region" in inputs[0]._get_tensor().parameters


@pytest.mark.parametrize("mode", [Transport.AUTO, Transport.SHM])
def test_server_refusing_shared_memory(mode):
    peer = Peer(refuse="shared memory support is disabled; start tritonserver with --allow-client-shm=true")
    client, logs = client_with(peer, transport=mode)
    with client:
        if mode is Transport.SHM:
            with pytest.raises(ShmUnavailable, match="--transport shm: shared memory .* failed") as caught:
                client.check()
            assert caught.value.exit_code == ExitCode.INFERENCE
            assert "\n" not in str(caught.value)
        else:
            client.check()
            assert client.transport is Transport.GRPC
            assert len(logs) == 1 and logs[0].startswith("WARNING: shared memory") and "over gRPC" in logs[0]
            for _ in range(3):
                assert len(client.infer(np.zeros((4, 6, 3), np.uint8))) == 2
            assert not any(sent_over_shm(i) for i in peer.requests)
            assert len(logs) == 1, "the fallback is said once"
    assert not list(shm.SHM_DIR.glob(f"{shm.PREFIX}*-{os.getpid()}-*")), "the refused region was unlinked"


@pytest.mark.parametrize("mode", [Transport.AUTO, Transport.SHM])
def test_full_dev_shm(mode, monkeypatch):
    monkeypatch.setattr(shm, "free_bytes", lambda directory=shm.SHM_DIR: 4096)
    peer = Peer()
    client, logs = client_with(peer, transport=mode)
    with client:
        if mode is Transport.SHM:
            with pytest.raises(ShmUnavailable, match="is full: 0 MiB free"):
                client.check()
        else:
            client.check()
            assert client.transport is Transport.GRPC and len(logs) == 1 and "is full" in logs[0]
    assert peer.register_calls == 0


def test_frame_growing_past_a_full_dev_shm_mid_run_falls_back_once(monkeypatch):
    peer = Peer()
    client, logs = client_with(peer, transport=Transport.AUTO)
    with client:
        client.check()
        assert client.transport is Transport.SHM and not logs
        client.infer(np.zeros((100, 100, 3), np.uint8))  # fits the first region
        assert sent_over_shm(peer.requests[-1])
        monkeypatch.setattr(shm, "free_bytes", lambda directory=shm.SHM_DIR: 0)
        client.infer(np.zeros((1080, 1920, 3), np.uint8))  # needs a bigger region: none can be made
        client.infer(np.zeros((1080, 1920, 3), np.uint8))
        assert not sent_over_shm(peer.requests[-1]) and not sent_over_shm(peer.requests[-2])
        assert client.transport is Transport.GRPC
        assert len(logs) == 1 and "is full" in logs[0]
        assert not peer.registered, "the regions were unregistered when leaving shared memory"
    assert not list(shm.SHM_DIR.glob(f"{shm.PREFIX}*-{os.getpid()}-*"))


def test_non_loopback_server_stays_on_grpc_under_auto():
    peer = Peer()
    client, logs = client_with(peer, url="triton:8001", transport=Transport.AUTO)
    with client:
        client.check()
        assert client.transport is Transport.GRPC and not logs and peer.register_calls == 0


def test_loopback_addresses():
    assert is_loopback("127.0.0.1:8001") and is_loopback("localhost:8001") and is_loopback("[::1]:8001")
    assert is_loopback("127.0.0.2:1")
    assert not is_loopback("triton:8001") and not is_loopback("10.0.0.5:8001")


def test_regions_registered_on_the_server_are_unregistered_on_close():
    peer = Peer()
    client, _ = client_with(peer, transport=Transport.SHM)
    with client:
        client.check()
        client.infer(np.zeros((600, 800, 3), np.uint8))
        assert peer.registered and all(name.startswith(shm.PREFIX) for name in peer.registered)
        files = list(shm.SHM_DIR.glob(f"{shm.PREFIX}*-{os.getpid()}-*"))
        assert {f.name for f in files} == set(peer.registered)
        assert max(f.stat().st_size for f in files) >= 3 * 600 * 800 * 4, "the region follows the frame size"
    assert not peer.registered
    assert not any(f.exists() for f in files)


# -- codecs ---------------------------------------------------------------------------------------


def test_padded_outputs_are_sliced_by_count():
    k = 5
    boxes = np.zeros((1, k, 4), np.float32)
    boxes[0, :3] = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    labels = np.array([[1, 2, 3, 0, 0]], np.int64)
    scores = np.array([[0.9, 0.8, 0.7, 0, 0]], np.float32)
    result = result_of([("boxes__0", "FP32", boxes), ("labels__1", "INT64", labels), ("scores__2", "FP32", scores),
                        ("count__3", "INT32", np.array([[3]], np.int32))])
    dets = PaddedCodec.decode(result)
    np.testing.assert_array_equal(dets.boxes, boxes[0, :3])
    np.testing.assert_array_equal(dets.labels, [1, 2, 3])
    np.testing.assert_array_equal(dets.scores, scores[0, :3])
    empty = PaddedCodec.decode(result_of([("boxes__0", "FP32", boxes), ("labels__1", "INT64", labels),
                                          ("scores__2", "FP32", scores), ("count__3", "INT32", np.zeros((1, 1), np.int32))]))
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)
    with pytest.raises(ValueError, match="count__3 is 6"):
        PaddedCodec.decode(result_of([("boxes__0", "FP32", boxes), ("labels__1", "INT64", labels),
                                      ("scores__2", "FP32", scores),
                                      ("count__3", "INT32", np.array([[6]], np.int32))]))


def test_rows_that_are_not_finite_numbers_are_dropped_counted_and_logged_once():
    logged = []
    check = OutputCheck(logged.append)
    nan, inf = np.nan, np.inf
    boxes = np.array([[1, 2, 3, 4], [nan, 2, 3, 4], [1, 2, inf, 4], [5, 6, 7, 8], [1, 1, 2, 2]], np.float32)
    labels = np.array([1, 2, 3, 4, 5], np.int64)
    scores = np.array([0.9, 0.9, 0.9, 0.8, nan], np.float32)
    seed = parse_outputs(result_of([("output__0", "FP32", boxes), ("output__1", "INT64", labels),
                                    ("output__2", "FP32", scores)]), check)
    np.testing.assert_array_equal(seed.labels, [1, 4])
    np.testing.assert_array_equal(seed.boxes, boxes[[0, 3]])
    padded = PaddedCodec.decode(result_of([("boxes__0", "FP32", boxes[None]), ("labels__1", "INT64", labels[None]),
                                           ("scores__2", "FP32", -scores[None]),
                                           ("count__3", "INT32", np.array([[4]], np.int32))]), check)
    np.testing.assert_array_equal(padded.labels, [1, 4])  # the padding past count is not looked at
    assert (check.rows, check.answers) == (5, 2)
    assert len(logged) == 1 and "not numbers" in logged[0] and "streamer doctor" in logged[0]
    assert "5 box(es) in 2 answer(s)" in check.summary()
    clean = OutputCheck()
    parse_outputs(result_of([("output__0", "FP32", boxes[[0, 3]]), ("output__1", "INT64", labels[[0, 3]]),
                             ("output__2", "FP32", scores[[0, 3]])]), clean)
    assert clean.rows == 0 and clean.summary() is None


def test_uint8_request_is_the_frame_as_decoded():
    image = np.random.default_rng(0).integers(0, 255, (7, 9, 3), dtype=np.uint8)
    data = PaddedCodec.encode(image[:, ::-1])  # a non-contiguous view is fine
    assert data.dtype == np.uint8 and data.shape == (1, 7, 9, 3)
    np.testing.assert_array_equal(data[0], image[:, ::-1])


def u8_config_text(k: int = 100, max_batch: int = 8) -> str:
    return f"""
name: "fasterrcnn_u8"
platform: "pytorch_libtorch"
max_batch_size: {max_batch}
dynamic_batching {{ }}
input [ {{ name: "image__0" data_type: TYPE_UINT8 dims: [ -1, -1, 3 ] }} ]
output [
  {{ name: "boxes__0" data_type: TYPE_FP32 dims: [ {k}, 4 ] }},
  {{ name: "labels__1" data_type: TYPE_INT64 dims: [ {k} ] }},
  {{ name: "scores__2" data_type: TYPE_FP32 dims: [ {k} ] }},
  {{ name: "count__3" data_type: TYPE_INT32 dims: [ 1 ] }}
]
parameters: {{ key: "max_detections" value: {{ string_value: "100" }} }}
"""


def test_codec_follows_the_served_config():
    assert codec_for(seed_config()) is SeedCodec and not SeedCodec.problems(seed_config())
    u8 = contract.parse_config(u8_config_text())
    assert codec_for(u8) is PaddedCodec and not PaddedCodec.problems(u8)
    problems = PaddedCodec.problems(contract.parse_config(u8_config_text(k=50, max_batch=0)))
    assert any("boxes__0 has dims [50, 4], expected [100, 4]" in p for p in problems)
    assert any("max_batch_size is 0" in p for p in problems)


# -- region owners ----------------------------------------------------------------------------------


def test_region_owners(tmp_path):
    mine = f"{shm.PREFIX}{shm.owner_tag()}-1"
    assert not shm.dead_owner(mine)
    namespace = mine[len(shm.PREFIX):].split("-")[0]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = open(f"/proc/{sleeper.pid}/stat").read().rsplit(")", 1)[1].split()[19]
        live = f"{shm.PREFIX}{namespace}-{sleeper.pid}-{start}-3"
        assert not shm.dead_owner(live), "a live owner's region is never taken"
        reused = f"{shm.PREFIX}{namespace}-{sleeper.pid}-{int(start) - 1}-3"
        assert shm.dead_owner(reused), "a PID now used by another process is not the owner"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert shm.dead_owner(live), "the owner exited"
    assert not shm.dead_owner(f"{shm.PREFIX}1-{sleeper.pid}-{start}-3"), "another pid namespace is never judged"
    assert not shm.dead_owner(f"streamer-{sleeper.pid}-abc-python"), "not our naming: never touched"
    for name in (mine, live, "streamer-123-abc"):
        (tmp_path / name).write_bytes(b"x")
    assert shm.remove_dead_files(tmp_path) == [live]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine, "streamer-123-abc"])
