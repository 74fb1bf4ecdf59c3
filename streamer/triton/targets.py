"""Where the servers are: `--triton` parsed into targets, targets resolved into addresses.

`host1:8001,host2:8001` are fixed servers; `dns:///name:8001` stands for every address the
name resolves to (looked up again now and then by the pool, so new replicas join and
removed ones leave). `is_loopback(url)`: the server is on this host (shared memory can reach it).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import List, Sequence, Tuple

from ..settings import SettingsError

DNS_PREFIX = "dns:///"
DEFAULT_PORT = 8001


def split_host_port(text: str, where: str = "--triton") -> Tuple[str, int]:
    """`host:port`, `[v6]:port` or `host` (port 8001)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        sep, port = rest[:1], rest[1:]
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, ""
    if not host:
        raise SettingsError(f"{where}: {text!r}: missing host (e.g. localhost:8001)")
    if sep and (not port.isdigit() or not 0 < int(port) < 65536):
        raise SettingsError(f"{where}: {text!r}: the port must be a number 1-65535")
    return host, int(port) if port else DEFAULT_PORT


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Target:
    """One entry of --triton: a fixed server, or a DNS name standing for all its addresses."""

    host: str
    port: int
    dns: bool = False

    @property
    def text(self) -> str:
        return (DNS_PREFIX if self.dns else "") + address(self.host, self.port)


def parse_targets(text: str, where: str = "--triton") -> Tuple[Target, ...]:
    """`a:8001,b:8001` / `dns:///name:8001`, duplicates dropped (order kept)."""
    found: List[Target] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        dns = part.startswith(DNS_PREFIX)
        if dns:
            part = part[len(DNS_PREFIX):]
        elif "://" in part:
            scheme = part.partition("://")[0]
            if scheme != "grpc":
                raise SettingsError(f"{where}: give each gRPC endpoint as HOST:PORT (e.g. localhost:8001) "
                                        f"or dns:///NAME:PORT, not a {scheme} URL")
            part = part.partition("://")[2]
        host, port = split_host_port(part, where)
        target = Target(host, port, dns)
        if target not in found:
            found.append(target)
    if not found:
        raise SettingsError(f"{where}: no server given")
    return tuple(found)


def resolve(targets: Sequence[Target], getaddrinfo=socket.getaddrinfo) -> List[str]:
    """The server addresses the targets stand for: a plain name stays one server (its name);
    a dns:/// name becomes every address it resolves to (none when it does not resolve)."""
    urls: List[str] = []
    for t in targets:
        if not t.dns:
            candidates = [address(t.host, t.port)]
        else:
            try:
                infos = getaddrinfo(t.host, t.port, type=socket.SOCK_STREAM)
            except socket.gaierror:
                infos = []
            candidates = sorted({address(info[4][0], t.port) for info in infos})
        for url in candidates:
            if url not in urls:
                urls.append(url)
    return urls


def is_loopback(url: str) -> bool:
    """True when HOST:PORT names this host (127.0.0.0/8, ::1, localhost)."""
    try:
        host, _ = split_host_port(url)
    except SettingsError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
