"""Session fixtures: models exported once per test session, real local Triton servers.

Every export passes --weights explicitly (random: nothing downloads). Servers bind
127.0.0.1 on free ports, wait for readiness, and are stopped by PID in teardown.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

import pytest

# The suite runs more torch threads than the machine has cores (3 workers, each server's stubs, the
# in-process models): OpenMP threads that spin at their barriers then take the CPU from those that
# work (an in-process v2 test took 70 s beside the others, 15 s with this). Set before any torch
# loads, here and in every server and command the tests start (they inherit the environment).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from streamer.server import EmbeddedServer, start_on_free_ports  # noqa: E402

from .helpers import kill_server, streamer

# Small and fast, yet it emits boxes even untrained: v2 at a small input size with
# few proposals (about 0.25 s a frame on 2 cores). Its 0.5 server-side score floor makes
# the number of detections vary from frame to frame.
V2_EXPORT = ("--arch", "fasterrcnn_resnet50_fpn_v2", "--weights", "random", "--min-size", "128",
             "--max-size", "160", "--proposals", "100", "--box-score-thresh", "0.5")
# The fastest arch (about 0.1 s a frame); untrained, it detects nothing.
MOBILENET_EXPORT = ("--arch", "fasterrcnn_mobilenet_v3_large_320_fpn", "--weights", "random")

SERVER_THREADS = 2
PACE_S = 0.1  # how long the paced model (repo_paced) takes to answer


def export_repo(repo: Path, args) -> Path:
    result = streamer("export-model", "--repo", repo, *args, timeout=600)
    assert result.returncode == 0, result.stderr
    return repo


def session_root(tmp_path_factory) -> Path:
    """A folder shared by every worker of this test session (pytest-xdist runs one process per
    worker, each with its own basetemp under the session's), removed with pytest's temp dirs."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def shared(tmp_path_factory, name: str, make: Callable[[Path], Path]) -> Path:
    """`make(folder)` once per test session, whatever the number of workers: the first worker to
    ask makes it under a file lock; the others wait for it and reuse it (read-only)."""
    from filelock import FileLock

    root = session_root(tmp_path_factory)
    target, done = root / f"shared-{name}", root / f"shared-{name}.done"
    with FileLock(str(root / f"shared-{name}.lock")):
        if not done.exists():
            if target.exists():
                shutil.rmtree(target)  # a worker that died while making it
            target.mkdir()
            make(target)
            done.touch()
    return target


@pytest.fixture(scope="session")
def repo_v2(tmp_path_factory) -> Path:
    return shared(tmp_path_factory, "repo_v2", lambda repo: export_repo(repo, V2_EXPORT))


@pytest.fixture(scope="session")
def repo_mobilenet(tmp_path_factory) -> Path:
    return shared(tmp_path_factory, "repo_mobilenet", lambda repo: export_repo(repo, MOBILENET_EXPORT))


def start_server(repo: Path) -> EmbeddedServer:
    """A real tritonserver on free loopback ports (retried if a port was taken meanwhile)."""
    return start_on_free_ports(repo, threads=SERVER_THREADS, startup_timeout=180)


# Servers the fixtures hold: at the worker's last teardown they are all killed by PID at once (a
# graceful stop unloads each model, seconds each, far longer side by side on 2 cores); each fixture
# then reaps its own and removes its shared memory. Graceful stops are tested where they matter.
_HELD: list = []


def holding(server: EmbeddedServer):
    """Fixture body: `server` for the test(s), stopped by PID and cleaned up after."""
    _HELD.append(server)
    yield server
    _HELD.remove(server)
    server.stop()
    server.cleanup()


def serving(repo: Path):
    """Fixture body: a server for the test(s), stopped by PID and cleaned up after."""
    yield from holding(start_server(repo))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    if nextitem is None:  # the session's fixtures go next: nothing will ask these servers anything again
        for server in list(_HELD):
            if server.alive():
                kill_server(server)  # a graceful stop of several side by side took 12-30 s to unload models


@pytest.fixture(scope="session")
def server_v2(repo_v2):
    yield from serving(repo_v2)


@pytest.fixture(scope="session")
def server_mobilenet(repo_mobilenet):
    yield from serving(repo_mobilenet)


def serve_sprites(repo: Path):
    """Fixture body: the sprite detector (tests/sprites.py) served on one thread."""
    yield from holding(start_on_free_ports(repo, threads=1, startup_timeout=300))


@pytest.fixture(scope="session")
def repo_sprites(tmp_path_factory) -> Path:
    """The sprite detector exported as both models (meaningful boxes without weights), shared by the workers."""
    from . import sprites

    return shared(tmp_path_factory, "repo_sprites", sprites.export_sprites)


@pytest.fixture(scope="session")
def server_sprites(repo_sprites):
    yield from serve_sprites(repo_sprites)


@pytest.fixture(scope="session")
def repo_empty(tmp_path_factory) -> Path:
    """A model under both contracts that answers every frame with no detection at almost no cost
    (tests/sprites.py): for tests of the plumbing, where the model's boxes do not matter and its
    speed would only cost time (MobileNet on 2 cores: about 0.14 s a frame)."""
    from . import sprites

    return shared(tmp_path_factory, "repo_empty", sprites.export_empty)


@pytest.fixture(scope="session")
def server_empty(repo_empty):
    yield from serving(repo_empty)


@pytest.fixture
def killable_server(repo_empty):
    """A server of its own, for tests that kill it."""
    yield from serving(repo_empty)


@pytest.fixture(scope="session")
def repo_paced(tmp_path_factory) -> Path:
    """The empty model made to answer in PACE_S by Triton's dynamic batcher (it holds a lone request
    that long, waiting for batch mates): a model slower than the video that costs no CPU, for tests
    of what a slow model does (progress and ETA, refresh sharing, queue time, a pool's routing)."""
    from . import sprites

    return shared(tmp_path_factory, "repo_paced",
                  lambda repo: sprites.export_sprites(repo, max_queue_delay_us=int(PACE_S * 1e6),
                                                      modules=sprites.empty_modules(),
                                                      arch="empty, paced (test detector: never detects)"))


@pytest.fixture(scope="session")
def server_paced(repo_paced):
    yield from serving(repo_paced)


# -- the suite's time guard ---------------------------------------------------------------------------

_SUITE_STARTED: list = []


def pytest_sessionstart(session):
    _SUITE_STARTED.append(time.monotonic())


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Every `make test` ends with the suite's wall time against its budget (STREAMER_SUITE_BUDGET_S,
    set by the Makefile); pytest's --durations lists the slowest tests just above it."""
    budget = os.environ.get("STREAMER_SUITE_BUDGET_S")
    if not budget or not _SUITE_STARTED or hasattr(config, "workerinput"):
        return
    took, limit = time.monotonic() - _SUITE_STARTED[0], float(budget)
    line = f"suite: {took // 60:.0f} min {took % 60:02.0f} s wall, budget {limit // 60:.0f} min {limit % 60:02.0f} s"
    if took > limit:
        terminalreporter.write_line(f"WARNING {line}: over budget; see docs/tests.md (the slowest tests are listed "
                                    "above) before adding more", yellow=True, bold=True)
    else:
        terminalreporter.write_line(f"{line} ({took / limit:.0%} of it)", green=True)
