"""Free ports for the servers streamer and its tests start: below the kernel's range for
outgoing connections' ports, so no client connection can be handed one before it is bound."""

from __future__ import annotations

import random
import socket

from streamer import server
from streamer.server import free_port


def ephemeral_start() -> int:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        return int(f.read().split()[0])


def test_a_free_port_is_below_the_ephemeral_range_and_can_be_listened_on():
    for _ in range(20):
        port = free_port()
        assert 1024 <= port < ephemeral_start()
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
            s.listen()


def test_a_port_someone_listens_on_is_never_given(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks = iter([busy, busy])
        real = random.randrange
        monkeypatch.setattr(server.random, "randrange", lambda lo, hi: next(picks, None) or real(lo, hi))
        port = free_port()
        assert port != busy and next(picks, None) is None, "both tries of the taken port were refused"
