"""docker-compose.shm.yml: shared memory in compose is an explicit choice, parsed by the real
docker-compose 1.29 (see test_container.py)."""

from __future__ import annotations

from .test_container import COMPOSE, ROOT, resolved

COMPOSE_SHM = ROOT / "docker-compose.shm.yml"


def test_compose_shm_override_shares_ipc_allows_client_shm_and_forces_the_transport():
    cpu, shm = resolved(COMPOSE), resolved(COMPOSE, COMPOSE_SHM)
    triton, client = shm["services"]["triton"], shm["services"]["streamer"]
    assert triton["ipc"] == "shareable" and client["ipc"] == "service:triton"
    assert triton["command"] == cpu["services"]["triton"]["command"] + ["--allow-client-shm=true"]
    base = cpu["services"]["streamer"]["command"]
    assert client["command"][:4] == base[:4] and client["command"][4:6] == ["--transport", "shm"]
    assert client["command"][6:] == base[4:], "the same run otherwise"
    assert "ipc" not in cpu["services"]["triton"] and "ipc" not in cpu["services"]["streamer"], \
        "the default compose stays on gRPC"
