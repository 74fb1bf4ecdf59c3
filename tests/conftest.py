"""Session fixtures: models exported once per test session, real local Triton servers.

Every export passes --weights explicitly (random: nothing downloads). Servers bind
127.0.0.1 on free ports, wait for readiness, and are stopped by PID in teardown.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.server import EmbeddedServer, start_on_free_ports

from .helpers import streamer

# Small and fast, yet it emits boxes even untrained: v2 at a small input size with
# few proposals (about 0.25 s a frame on 2 cores). Its 0.5 server-side score floor makes
# the number of detections vary from frame to frame.
V2_EXPORT = ("--arch", "fasterrcnn_resnet50_fpn_v2", "--weights", "random", "--min-size", "128",
             "--max-size", "160", "--proposals", "100", "--box-score-thresh", "0.5")
# The fastest arch (about 0.1 s a frame); untrained, it detects nothing.
MOBILENET_EXPORT = ("--arch", "fasterrcnn_mobilenet_v3_large_320_fpn", "--weights", "random")

SERVER_THREADS = 2


def export_repo(repo: Path, args) -> Path:
    result = streamer("export-model", "--repo", repo, *args, timeout=600)
    assert result.returncode == 0, result.stderr
    return repo


@pytest.fixture(scope="session")
def repo_v2(tmp_path_factory) -> Path:
    return export_repo(tmp_path_factory.mktemp("repo_v2"), V2_EXPORT)


@pytest.fixture(scope="session")
def repo_mobilenet(tmp_path_factory) -> Path:
    return export_repo(tmp_path_factory.mktemp("repo_mobilenet"), MOBILENET_EXPORT)


def start_server(repo: Path) -> EmbeddedServer:
    """A real tritonserver on free loopback ports (retried if a port was taken meanwhile)."""
    return start_on_free_ports(repo, threads=SERVER_THREADS, startup_timeout=180)


def serving(repo: Path):
    """Fixture body: a server for the test(s), stopped by PID and cleaned up after."""
    server = start_server(repo)
    yield server
    server.stop()
    server.cleanup()


@pytest.fixture(scope="session")
def server_v2(repo_v2):
    yield from serving(repo_v2)


@pytest.fixture(scope="session")
def server_mobilenet(repo_mobilenet):
    yield from serving(repo_mobilenet)


@pytest.fixture
def killable_server(repo_mobilenet):
    """A server of its own, for tests that kill it."""
    yield from serving(repo_mobilenet)
