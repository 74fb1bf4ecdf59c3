"""`streamer run` when things go wrong mid-file: the server killed, Ctrl-C, SIGTERM.

Written frames always equal read frames, in order; what could not be inferred is counted.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from pathlib import Path

import pytest

from ..helpers import (alive, children, inference_count, kill_server, owned_by, process_name, read_video, region_files,
                       registered, start_streamer, wait_until, write_clip)
from .test_run_file import accounting

pytestmark = pytest.mark.slow


def finish(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


# The default path (the lean model over shared memory on this host) and the seed's path.
PATHS = {"default": ((), "over shm"), "seed-grpc": (("--model", "fasterrcnn", "--transport", "grpc"),
                                                     "model fasterrcnn (FP32 [3,H,W] frames, one per request) over grpc")}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_server_killed_and_back_resends_what_was_in_flight(path, tmp_path, killable_server):
    n = 150
    clip = write_clip(tmp_path / "in.mp4", n)
    out = tmp_path / "out.mp4"
    flags, said = PATHS[path]
    proc = start_streamer("run", clip, "--out", out, "--triton", killable_server.grpc_url, "--in-flight", "3",
                          "--retry-timeout", "120", *flags)
    wait_until(lambda: inference_count(killable_server.http_url) >= 20, 120, what="20 frames inferred")
    kill_server(killable_server)
    killable_server.restart()  # same ports; the run reconnects on its own

    code, stdout, stderr = finish(proc)
    assert code == 0, stderr
    assert "unreachable" in stderr and "resent" in stderr
    assert said in stderr
    assert accounting(stdout) == {"read": n, "inferred": n, "written": n, "failed": 0}
    assert "reconnects 1" in stdout
    assert read_video(out).codes == list(range(n))
    assert not region_files(proc.pid) and not owned_by(registered(killable_server.grpc_url), proc.pid)


def test_server_gone_for_good_writes_every_frame_and_fails(tmp_path, killable_server):
    n = 120
    clip = write_clip(tmp_path / "in.mp4", n)
    out = tmp_path / "out.mp4"
    proc = start_streamer("run", clip, "--out", out, "--triton", killable_server.grpc_url,
                          "--retry-timeout", "3")
    wait_until(lambda: inference_count(killable_server.http_url) >= 20, 120, what="20 frames inferred")
    kill_server(killable_server)

    code, stdout, stderr = finish(proc)
    assert code == 6, stderr
    counts = accounting(stdout)
    assert counts["read"] == counts["written"] == n
    assert counts["failed"] > 0 and counts["inferred"] + counts["failed"] == n
    assert "did not come back within 3 s" in stderr
    assert read_video(out).codes == list(range(n))


def _collect(stream, lines):
    for line in stream:
        lines.append(line)


def test_embedded_server_killed_is_restarted_by_the_run(tmp_path, repo_empty):
    n = 150
    clip = write_clip(tmp_path / "in.mp4", n)
    out = tmp_path / "out.mp4"
    proc = start_streamer("run", clip, "--out", out, "--model-repo", repo_empty, "--threads", "2")
    lines = []
    reader = threading.Thread(target=_collect, args=(proc.stderr, lines), daemon=True)
    reader.start()
    wait_until(lambda: any("embedded Triton ready" in ln for ln in lines), 180, what="embedded server")
    http = re.search(r"HTTP (http://\S+)\)", "".join(lines)).group(1)
    wait_until(lambda: inference_count(http) >= 20, 120, what="20 frames inferred")
    servers = [pid for pid in children(proc.pid) if process_name(pid) == "tritonserver"]
    assert len(servers) == 1
    os.killpg(servers[0], signal.SIGKILL)

    stdout = proc.stdout.read()  # not communicate(): the reader thread owns stderr
    proc.wait(240)
    reader.join(10)
    stderr = "".join(lines)
    assert proc.returncode == 0, stderr
    assert "restarting it" in stderr and "resent" in stderr
    assert accounting(stdout) == {"read": n, "inferred": n, "written": n, "failed": 0}
    assert read_video(out).codes == list(range(n))
    assert not [pid for pid in children(proc.pid)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_run_leaves_a_playable_mp4_and_the_accounting_line(sig, tmp_path, server_empty):
    n = 400
    clip = write_clip(tmp_path / "in.mp4", n)
    out = tmp_path / "out.mp4"
    start = inference_count(server_empty.http_url)
    proc = start_streamer("run", clip, "--out", out, "--triton", server_empty.grpc_url)
    wait_until(lambda: inference_count(server_empty.http_url) >= start + 15, 120, what="15 frames inferred")
    proc.send_signal(sig)

    code, stdout, stderr = finish(proc, timeout=60)
    assert code == 130, stderr
    assert "interrupted" in stderr
    counts = accounting(stdout)
    assert 0 < counts["written"] < n
    codes = read_video(out).codes  # playable: it decodes, and holds what was processed
    assert codes == list(range(counts["written"]))
    assert "over shm" in stderr
    assert not region_files(proc.pid), "shared-memory regions unlinked"
    assert not owned_by(registered(server_empty.grpc_url), proc.pid), "and unregistered"


def test_embedded_run_leaves_no_process_or_shared_memory(tmp_path, repo_empty):
    clip = write_clip(tmp_path / "in.mp4", 5)
    proc = start_streamer("run", clip, "--out", tmp_path / "o.mp4", "--model-repo", repo_empty)
    seen = set()

    def spot_server():
        seen.update(pid for pid in children(proc.pid) if process_name(pid) == "tritonserver")
        return proc.poll() is not None

    wait_until(spot_server, 240, interval=0.05, what="the run to finish")
    _, stderr = proc.communicate()
    assert proc.returncode == 0, stderr
    assert seen, "the embedded server was never seen"
    assert not any(alive(pid) for pid in seen)
    assert not list(Path("/dev/shm").glob(f"streamer-{proc.pid}-*"))
    assert "over shm" in stderr and not region_files(proc.pid)
