"""Several real Triton servers behind one `--triton`: spread, lossless, surviving a server.

Servers are real embedded tritonservers on loopback (127.0.0.1, or 127.0.0.2/.3 for the DNS
case), started and stopped by PID. A name resolving to both goes through the real resolver
with Debian's libnss-wrapper (NSS_WRAPPER_HOSTS): /etc/hosts is never touched.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest

from streamer.server import EmbeddedServer, EmbeddedServerSettings, free_port

from ..helpers import (STREAMER, inference_count, kill_server, read_jsonl, read_video, start_streamer, streamer, wait_until,
                       write_clip)
from ..conftest import start_server
from ..proxy import PausableRelay
from .test_run_faults import finish
from .test_run_file import accounting

# Meant for one worker (mostly waiting, little CPU; module servers started once). pytest-xdist 3.8 applies
# the group by rewriting an item's private _nodeid, which pytest 9 no longer reads: with pytest 9.2 (what
# installs here) the mark has no effect, and each worker given a pool test starts its own module pair
# (paced servers: a few seconds each). With pytest 8 it groups as meant.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pool")]

NSS_WRAPPER = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so"


def start(repo: Path, host: str = "127.0.0.1", grpc_port: int = 0) -> EmbeddedServer:
    return EmbeddedServer(EmbeddedServerSettings(repo=repo, host=host, http_port=free_port(host),
                                         grpc_port=grpc_port or free_port(host), metrics_port=free_port(host),
                                         threads=1, startup_timeout=180)).start()


# The pool's tests are about routing, not about a model: the paced empty model (conftest's
# repo_paced: answers in 0.1 s, no CPU) keeps a run going while a server is killed, paused,
# restarted or renamed.


def stop_all(servers: List[EmbeddedServer]) -> None:
    for s in servers:
        s.request_stop()  # side by side
    for s in servers:
        s.stop()
        s.cleanup()


@pytest.fixture(scope="module")
def paced_pair(server_paced, repo_paced):
    """The session's paced server and one of this module's: for tests that neither kill nor restart."""
    second = start(repo_paced)
    yield server_paced, second
    stop_all([second])


@pytest.fixture(scope="module")
def dns_pair(repo_paced):
    """Two paced servers on one port, at 127.0.0.2 and 127.0.0.3 (what a DNS name stands for)."""
    assert os.path.exists(NSS_WRAPPER), "apt-get install libnss-wrapper (.ci/run installs it)"
    port = free_port("127.0.0.2")
    servers = []
    try:
        servers = [start(repo_paced, "127.0.0.2", port), start(repo_paced, "127.0.0.3", port)]
        yield servers, port
    finally:
        stop_all(servers)


@pytest.fixture
def two_servers(repo_paced):
    servers = []
    try:
        servers = [start(repo_paced), start(repo_paced)]
        yield servers
    finally:
        stop_all(servers)


@pytest.fixture
def session_and_own(server_paced, repo_paced):
    """The module's server, and a server of this test's own: the one it kills."""
    own = start(repo_paced)
    try:
        yield server_paced, own
    finally:
        own.stop()
        own.cleanup()


def run_with_b_stalled(b: EmbeddedServer, command, answered: int, stall: float, timeout: float):
    """Start streamer with `command(url)` (its arguments, b's gRPC reached through a relay at `url`);
    once b answered `answered` more frames, its answers wait `stall` s (slow, not gone). The relay's
    url and finish()'s (code, stdout, stderr)."""
    b0 = inference_count(b.http_url)
    with PausableRelay(("127.0.0.1", b.settings.grpc_port)) as relay:
        proc = start_streamer(*command(relay.url))
        try:
            wait_until(lambda: inference_count(b.http_url) >= b0 + answered, 180, what="server b at work")
            relay.pause()
            time.sleep(stall)  # the stall's length
        finally:
            relay.resume()
            result = finish(proc, timeout=timeout)
    return relay.url, result


def taken(stdout: str) -> dict:
    match = re.search(r"servers ([^;]+); moved (\d+)", stdout)
    assert match, stdout
    per = dict((url, int(n)) for url, n in (part.rsplit(" ", 1) for part in match.group(1).split(", ")))
    return {"servers": per, "moved": int(match.group(2))}


def test_two_servers_write_exactly_what_one_writes(tmp_path, server_v2, repo_v2):
    n = 12
    clip = write_clip(tmp_path / "in.mp4", n)
    own = start_server(repo_v2)  # as the session's: the same threads, the same float results
    servers = [server_v2, own]
    try:
        # one request in flight per server: every frame is inferred alone in both runs (Triton batches
        # requests that wait together, and a batch of two may differ from one alone in float noise)
        one = streamer("run", clip, "--triton", servers[0].grpc_url, "--out", tmp_path / "one.mp4",
                       "--detections", tmp_path / "one.jsonl", "--in-flight", 1, timeout=300)
        both = streamer("run", clip, "--triton", f"{servers[0].grpc_url},{servers[1].grpc_url},"
                        f"{servers[0].grpc_url}", "--out", tmp_path / "two.mp4", "--detections",
                        tmp_path / "two.jsonl", "--in-flight", 1, timeout=300)
        counts = [inference_count(s.http_url) for s in servers]
    finally:
        own.stop()
        own.cleanup()
    assert one.returncode == 0 and both.returncode == 0, one.stderr + both.stderr
    assert accounting(both.stdout) == {"read": n, "inferred": n, "written": n, "failed": 0}
    spread = taken(both.stdout)
    assert set(spread["servers"]) == {servers[0].grpc_url, servers[1].grpc_url}  # the duplicate was dropped
    assert sum(spread["servers"].values()) == n and min(spread["servers"].values()) > 0
    assert counts[1] >= spread["servers"][servers[1].grpc_url] > 0  # Triton's own statistics show the work
    one_video, two_video = read_video(tmp_path / "one.mp4"), read_video(tmp_path / "two.mp4")
    assert two_video.pts == one_video.pts and len(two_video.images) == n
    for a, b in zip(one_video.images, two_video.images):  # the same frames, boxes drawn alike
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 1.0
    one_records, two_records = read_jsonl(tmp_path / "one.jsonl"), read_jsonl(tmp_path / "two.jsonl")
    assert [r["frame"] for r in two_records] == list(range(n))
    assert two_records == one_records  # the same detections, frame by frame
    assert any(r["detections"] for r in two_records)  # untrained v2 at a small size draws boxes


def test_a_server_killed_mid_run_hands_its_frames_to_the_other(tmp_path, session_and_own):
    n = 120
    clip = write_clip(tmp_path / "in.mp4", n)
    a, b = session_and_own
    proc = start_streamer("run", clip, "--out", tmp_path / "out.mp4", "--triton", f"{a.grpc_url},{b.grpc_url}",
                          "--in-flight", "2")
    wait_until(lambda: inference_count(b.http_url) >= 10, 180, what="server b at work")
    kill_server(b)  # tritonserver itself, SIGKILL: what it had in flight is lost there
    code, stdout, stderr = finish(proc, timeout=400)
    assert code == 0, stderr
    assert accounting(stdout) == {"read": n, "inferred": n, "written": n, "failed": 0}
    spread = taken(stdout)
    assert spread["servers"][b.grpc_url] >= 10 and spread["servers"][a.grpc_url] > 0
    assert sum(spread["servers"].values()) == n
    assert read_video(tmp_path / "out.mp4").codes == list(range(n))


def test_a_slow_server_is_routed_around_and_its_frames_resent(tmp_path, paced_pair):
    n, stall = 240, 6.0
    clip = write_clip(tmp_path / "in.mp4", n)
    a, b = paced_pair
    started = time.monotonic()
    url_b, (code, stdout, stderr) = run_with_b_stalled(
        b, lambda url: ("run", clip, "--out", tmp_path / "out.mp4", "--detections", tmp_path / "d.jsonl",
                        "--triton", f"{a.grpc_url},{url}", "--request-timeout", "120",
                        "--summary", tmp_path / "summary.json"), answered=10, stall=stall, timeout=400)
    elapsed = time.monotonic() - started
    assert code == 0, stderr
    assert elapsed < 120, "finished before --request-timeout (a sanity bound, not a timing test)"
    assert accounting(stdout) == {"read": n, "inferred": n, "written": n, "failed": 0}
    assert "WARNING: shared memory" not in stderr, stderr  # each server's client has its own regions
    assert f"Triton server {url_b} is slow" in stderr, stderr
    assert f"Triton server {url_b} is no longer slow" in stderr, stderr
    report = json.loads((tmp_path / "summary.json").read_text())
    # frames the frozen server held are resent for slowness; a stream that broke meanwhile (seen once
    # on a loaded CI machine: moved 2) hands its frames back as a broken server's. Either way, once each:
    assert report["moved_slow"] > 0, (report, stderr)
    assert f"moved for slowness {report['moved_slow']}" in stdout
    assert sum(server["frames"] for server in report["servers"]) == n, "each frame answered once, counted once"
    assert [r["frame"] for r in read_jsonl(tmp_path / "d.jsonl")] == list(range(n))
    assert read_video(tmp_path / "out.mp4").codes == list(range(n))


def test_live_a_slow_server_never_holds_the_picture_and_its_frame_is_given_up(tmp_path, paced_pair):
    """Live (a file played as a camera, at its own pace): one of two servers frozen for a while.
    Every captured frame is still shown and recorded (the display never waits for inference),
    the frame the frozen server held is given up as failed (stale by then), counted as moved for
    slowness, and the run ends cleanly."""
    from ..cameras import camera_clip, read_bottom_code

    n, stall = 400, 6.0
    clip = camera_clip(tmp_path / "cam.mp4", n)  # 25 fps: 16 s
    a, b = paced_pair
    url_b, (code, stdout, stderr) = run_with_b_stalled(
        b, lambda url: ("watch", clip, "--out-dir", tmp_path, "--segment", "0", "--triton", f"{a.grpc_url},{url}",
                        "--summary", tmp_path / "summary.json", "--status-every", "0"), answered=3, stall=stall,
        timeout=300)
    assert code == 0, stderr
    assert f"Triton server {url_b} is slow" in stderr
    report = json.loads((tmp_path / "summary.json").read_text())
    frames = report["streams"][0]["frames"]
    assert frames["captured"] == frames["shown"] == n and frames["dropped"] == 0, frames  # never waited
    assert report["moved_slow"] > 0 and frames["failed"] >= report["moved_slow"], report
    assert frames["inferred"] + frames["failed"] + frames["skipped"] == n
    codes = [read_bottom_code(image) for image in read_video(tmp_path / "cam1.mp4").images]
    assert codes == list(range(n))


def test_a_restarted_server_rejoins(tmp_path, session_and_own):
    n = 600  # A alone answers 10 to 20 a second: still running when B is back
    clip = write_clip(tmp_path / "in.mp4", n)
    a, b = session_and_own
    proc = start_streamer("run", clip, "--detections", tmp_path / "d.jsonl", "--triton",
                          f"{a.grpc_url},{b.grpc_url}")
    try:
        wait_until(lambda: inference_count(b.http_url) >= 5, 180, what="server b at work")
        kill_server(b)
        b.restart()  # same ports; a fresh process counts from 0
        wait_until(lambda: inference_count(b.http_url) >= 5, 240, what="server b to take frames again")
    finally:
        code, stdout, stderr = finish(proc, timeout=400)
    assert code == 0, stderr
    assert accounting(stdout) == {"read": n, "inferred": n, "written": n, "failed": 0}
    assert "Triton is back" in stderr
    assert [r["frame"] for r in read_jsonl(tmp_path / "d.jsonl")] == list(range(n))


def test_every_server_gone_follows_the_single_server_rules(tmp_path, two_servers):
    n = 90
    clip = write_clip(tmp_path / "in.mp4", n)
    a, b = two_servers
    proc = start_streamer("run", clip, "--out", tmp_path / "out.mp4", "--triton", f"{a.grpc_url},{b.grpc_url}",
                          "--retry-timeout", "5")
    wait_until(lambda: inference_count(a.http_url) + inference_count(b.http_url) >= 10, 180, what="10 frames")
    kill_server(a)
    kill_server(b)
    code, stdout, stderr = finish(proc, timeout=300)
    assert code == 6, stderr
    counts = accounting(stdout)
    assert counts["read"] == counts["written"] == n and counts["failed"] > 0
    assert counts["inferred"] + counts["failed"] == n
    assert "no server came back within 5 s" in stderr
    assert read_video(tmp_path / "out.mp4").codes == list(range(n))


def test_a_dns_name_stands_for_every_address(tmp_path, dns_pair):
    servers, port = dns_pair
    before = [inference_count(s.http_url) for s in servers]
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.2 tritons\n127.0.0.3 tritons\n")
    env = {**os.environ, "LD_PRELOAD": NSS_WRAPPER, "NSS_WRAPPER_HOSTS": str(hosts)}
    clip = write_clip(tmp_path / "in.mp4", 40)
    result = streamer("run", clip, "--triton", f"dns:///tritons:{port}", "--detections", tmp_path / "d.jsonl",
                      env=env, timeout=300)
    counts = [inference_count(s.http_url) - b for s, b in zip(servers, before)]
    assert result.returncode == 0, result.stderr
    assert f"Triton servers: 127.0.0.2:{port}, 127.0.0.3:{port}" in result.stderr
    spread = taken(result.stdout)
    assert set(spread["servers"]) == {f"127.0.0.2:{port}", f"127.0.0.3:{port}"}
    assert all(c > 0 for c in counts), counts  # both did work
    assert [r["frame"] for r in read_jsonl(tmp_path / "d.jsonl")] == list(range(40))


class Drained:
    """A pipe read into lines by a thread while the process runs (so a test can wait for a line)."""

    def __init__(self, pipe):
        self.lines: List[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(pipe), daemon=True)
        self.thread.start()

    def has(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    @property
    def text(self) -> str:
        self.thread.join(30)
        return "".join(self.lines)


def test_a_dns_name_looked_up_again_mid_run_adds_and_removes_servers(tmp_path, dns_pair):
    """--dns-refresh 1 over a name whose hosts file changes mid-run: 127.0.0.2 alone, then both
    (B joins and takes frames), then 127.0.0.3 alone (A finishes what it holds and takes nothing
    more); the file is still every frame exactly once, in order. nss_wrapper reads NSS_WRAPPER_HOSTS
    again on a lookup once the file was replaced (os.replace) or its mtime (whole seconds) changed."""
    n, in_flight = 300, 1
    servers, port = dns_pair
    hosts = tmp_path / "hosts"

    def name(*addresses: str) -> None:  # atomically: a lookup never sees a half-written file
        new = tmp_path / "hosts.new"
        new.write_text("".join(f"{address} tritons\n" for address in addresses))
        os.replace(new, hosts)

    proc = None
    try:
        a, b = servers
        a0, b0 = inference_count(a.http_url), inference_count(b.http_url)
        url_a, url_b = f"127.0.0.2:{port}", f"127.0.0.3:{port}"
        name("127.0.0.2")
        clip = write_clip(tmp_path / "in.mp4", n)
        env = {**os.environ, "LD_PRELOAD": NSS_WRAPPER, "NSS_WRAPPER_HOSTS": str(hosts)}
        proc = subprocess.Popen(
            [*STREAMER, "run", str(clip), "--triton", f"dns:///tritons:{port}", "--dns-refresh", "1",
             "--in-flight", str(in_flight), "--detections", str(tmp_path / "d.jsonl"),
             "--summary", str(tmp_path / "summary.json")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, env=env)
        out, err = Drained(proc.stdout), Drained(proc.stderr)

        def running(predicate):
            def check():
                assert proc.poll() is None, f"the run ended before the test was done:\n{err.text}"
                return predicate()
            return check

        wait_until(running(lambda: inference_count(a.http_url) >= a0 + 20), 180, what="server A at work")
        assert inference_count(b.http_url) == b0, "B is not in the name yet"

        name("127.0.0.2", "127.0.0.3")
        wait_until(running(lambda: err.has(f"Triton server {url_b} joins the pool")), 30, what="B to join")
        b_joined = inference_count(b.http_url)
        wait_until(running(lambda: inference_count(b.http_url) >= b_joined + 10), 60, what="B taking frames")
        a_before = inference_count(a.http_url)
        wait_until(running(lambda: inference_count(a.http_url) > a_before), 60, what="A still taking frames")

        name("127.0.0.3")
        wait_until(running(lambda: err.has(f"Triton server {url_a} is no longer resolved; it finishes what it "
                                           "has and leaves")), 30, what="A to leave")
        a_left = inference_count(a.http_url)  # from here A finishes at most the frames it held
        b_left = inference_count(b.http_url)
        wait_until(running(lambda: inference_count(b.http_url) >= b_left + 20), 60, what="B going on alone")
        a_done = inference_count(a.http_url)
        assert a_done <= a_left + in_flight, (a_left, a_done)
        code = proc.wait(timeout=400)
        counts = {url_a: inference_count(a.http_url), url_b: inference_count(b.http_url)}
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(30)
    stdout, stderr = out.text, err.text
    assert code == 0, stderr
    assert counts[url_a] == a_done, "A took nothing after it had left"
    assert counts[url_b] > b_left + 20
    assert accounting(stdout) == {"read": n, "inferred": n, "written": n, "failed": 0}
    report = json.loads((tmp_path / "summary.json").read_text())
    shares = {s["url"]: s["frames"] for s in report["servers"]}
    assert set(shares) == {url_a, url_b} and sum(shares.values()) == n and report["moved"] == 0
    assert all(counts[url] >= shares[url] > 0 for url in shares), (counts, shares)
    assert stderr.count("joins the pool") == 1 and stderr.count("is no longer resolved") == 1
    assert [r["frame"] for r in read_jsonl(tmp_path / "d.jsonl")] == list(range(n))
    assert all(r["status"] == "ok" for r in read_jsonl(tmp_path / "d.jsonl"))


def test_doctor_checks_every_server_and_names_the_wrong_one(server_paced):
    a = server_paced
    dead = f"127.0.0.1:{free_port()}"
    result = streamer("doctor", "--triton", f"{a.grpc_url},{dead}", timeout=120)
    assert result.returncode == 4, result.stdout + result.stderr
    assert f"server {a.grpc_url}" in result.stdout and f"server {dead}" in result.stdout
    assert "[FAIL]" in result.stdout.split(f"server {dead}")[1]
    assert "[FAIL]" not in result.stdout.split(f"server {dead}")[0]

