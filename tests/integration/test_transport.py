"""System shared memory with a real local Triton: each request owns its slot until its answer
arrives, regions follow the frame size, and regions of dead clients are removed while a
live client's are never touched."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from fractions import Fraction
from typing import List

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from streamer.triton import shm
from streamer.frames import Frame
from streamer.states import Transport
from streamer.triton import InferenceStream, TritonClient

from ..helpers import children, frame_image, owned_by, region_files, registered

pytestmark = pytest.mark.slow

SIZES = [(200, 150), (200, 150), (640, 480), (200, 150), (320, 240), (640, 480), (200, 150), (320, 240)]


def distinct_frames(sizes=SIZES):
    return [Frame(i, i, Fraction(1, 30), 0.0, frame_image(i * 3, w, h)) for i, (w, h) in enumerate(sizes)]


def single_answers(url: str, frames, model: str = "fasterrcnn"):
    with TritonClient(url, model=model, transport=Transport.GRPC) as client:
        client.check()
        return [client.infer(f.image) for f in frames]


def mismatches(outcomes, expected) -> List[int]:
    bad = []
    for outcome in outcomes:
        want = expected[outcome.frame.index]
        got = outcome.detections
        if got is None or got.boxes.shape != want.boxes.shape or not np.allclose(got.boxes, want.boxes, atol=1e-3):
            bad.append(outcome.frame.index)
    return bad


@pytest.mark.parametrize("model", ["fasterrcnn", "fasterrcnn_u8"])
def test_each_request_owns_its_slot_until_its_answer_arrives(model, server_v2):
    frames = distinct_frames()
    expected = single_answers(server_v2.grpc_url, frames, model)
    assert len({len(d) for d in expected}) > 2, "the frames' answers must differ to tell them apart"
    with TritonClient(server_v2.grpc_url, model=model, transport=Transport.SHM) as client:
        client.check()
        assert client.transport is Transport.SHM and client.model == model
        outcomes = list(InferenceStream(client, max_in_flight=4).process(frames))
        assert [o.frame.index for o in outcomes] == list(range(len(frames)))
        assert all(o.ok for o in outcomes), [o.error for o in outcomes]
        assert mismatches(outcomes, expected) == []
        files = region_files(os.getpid())
        assert 1 <= len(files) <= 4, "one region per request in flight"
        assert max(f.stat().st_size for f in files) >= client.codec.encode(frames[2].image).nbytes, \
            "regions grow with the frame size"
        assert sorted(f.name for f in files) == owned_by(registered(server_v2.grpc_url), os.getpid())
    assert region_files(os.getpid()) == [] and owned_by(registered(server_v2.grpc_url), os.getpid()) == []


def test_a_slot_reused_before_its_answer_gives_another_frames_boxes(server_v2, monkeypatch):
    """The pitfall the slots prevent is real: one region shared by all requests in flight."""
    frames = distinct_frames([(200, 150)] * 6)  # one size: the region is only ever rewritten
    expected = single_answers(server_v2.grpc_url, frames)
    acquire = shm.RegionPool.acquire
    monkeypatch.setattr(shm.RegionPool, "acquire", lambda self, key, nbytes: acquire(self, "one", nbytes))
    with TritonClient(server_v2.grpc_url, transport=Transport.SHM) as client:
        client.check()
        outcomes = list(InferenceStream(client, max_in_flight=4).process(frames))
    assert mismatches(outcomes, expected), "a shared slot should have mixed up answers"


HOLDER = """
import sys
import numpy as np
from streamer.states import Transport
from streamer.triton import TritonClient
with TritonClient(sys.argv[1], transport=Transport.SHM) as client:
    client.check()
    client.infer(np.zeros((120, 160, 3), np.uint8))
    print("ready", flush=True)
    for line in sys.stdin:
        client.infer(np.zeros((120, 160, 3), np.uint8))
        print("ok", flush=True)
"""


def holder(url: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read() if proc.poll() is not None else line
    return proc


def test_regions_of_a_dead_client_go_those_of_a_live_one_stay(server_empty):
    url = server_empty.grpc_url
    dead, live = holder(url), holder(url)
    try:
        dead_files = region_files(dead.pid)
        assert dead_files and region_files(live.pid)
        # SIGKILL: no cleanup runs. Python's shared-memory tracker (a child) would unlink the
        # files on its own; it dies too, as when a container or process group is killed.
        for pid in [dead.pid] + children(dead.pid):
            os.kill(pid, signal.SIGKILL)
        dead.wait(10)
        # Its registrations stay on the server (only this test's clients use it now). Its files stay
        # too, until a client checks: any client on this host, another test's on another worker
        # included, removes dead clients' files, so their count is not this test's to know.
        dead_regions = owned_by(registered(url), dead.pid)
        assert sorted(f.name for f in dead_files) == dead_regions

        with TritonClient(url, transport=Transport.SHM) as client:
            steps = {what: detail for what, detail, _ in client.checks()}
            removed = re.search(r"removed (\d+) region\(s\) left by clients that died", steps["transport"])
            assert removed and int(removed.group(1)) >= len(dead_regions), steps["transport"]
            assert not any(f.exists() for f in dead_files)
            assert owned_by(registered(url), dead.pid) == []
            assert region_files(live.pid) and owned_by(registered(url), live.pid), "a live client's regions stay"
            live.stdin.write("infer\n")
            live.stdin.flush()
            assert live.stdout.readline().strip() == "ok"
    finally:
        for proc in (dead, live):
            if proc.poll() is None:
                proc.stdin.close()
                proc.wait(30)
    assert live.returncode == 0, live.stderr.read()
    assert region_files(live.pid) == [] and owned_by(registered(url), live.pid) == []
    assert region_files(os.getpid()) == []


def per_request_compute_ns(url: str, model: str) -> int:
    """Triton's per-request sum of compute time (a batch's time counted once per request in it)."""
    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(model)
    return sum(s.inference_stats.compute_input.ns + s.inference_stats.compute_infer.ns
               + s.inference_stats.compute_output.ns for s in stats.model_stats)


def test_server_time_per_frame_counts_a_batch_once(server_v2):
    url, model = server_v2.grpc_url, "fasterrcnn_u8"
    frames = distinct_frames([(200, 150)] * 8)  # one size: Triton may batch them
    with TritonClient(url, model=model, transport=Transport.SHM) as client:
        client.check()
        count0, seconds0 = client.compute_stats()
        batches0, summed0 = client.batch_stats(), per_request_compute_ns(url, model)
        outcomes = list(InferenceStream(client, max_in_flight=8).process(frames))
        count1, seconds1 = client.compute_stats()
        batches1, summed1 = client.batch_stats(), per_request_compute_ns(url, model)
    assert all(o.ok for o in outcomes)
    executions = {size: n - batches0.get(size, 0) for size, n in batches1.items() if n > batches0.get(size, 0)}
    assert max(executions) > 1, f"Triton should have batched some of the burst: {executions}"
    assert count1 - count0 == len(frames) == sum(size * n for size, n in executions.items())
    # The per-request sums count each batch's execution once per request in it: more than it took.
    assert (summed1 - summed0) / 1e9 > seconds1 - seconds0 > 0
