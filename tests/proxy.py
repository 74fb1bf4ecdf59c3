"""A TCP relay on loopback that a test can pause: a server behind it turns slow (its answers wait)
without being frozen itself (a SIGSTOPped Python-backend tritonserver may abort when it resumes:
its timed waits on the model stub expire while it is stopped)."""

from __future__ import annotations

import select
import socket
import threading
from typing import List, Tuple

from streamer.server import free_port


class PausableRelay:
    """Relays 127.0.0.1:port to `target` (host, port), both ways, connection by connection.
    pause(): bytes stop moving (they wait in the sockets); resume(): they move again."""

    def __init__(self, target: Tuple[str, int]):
        self.target = target
        self.port = free_port()
        self._moving = threading.Event()
        self._moving.set()
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._sockets: List[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pause(self) -> None:
        self._moving.clear()

    def resume(self) -> None:
        self._moving.set()

    def close(self) -> None:
        self._closed.set()
        self._moving.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for sock in [self._listener, *self._sockets]:
            sock.close()

    def __enter__(self) -> "PausableRelay":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self._sockets += [client, server]
            thread = threading.Thread(target=self._relay, args=(client, server), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _relay(self, a: socket.socket, b: socket.socket) -> None:
        peer = {a: b, b: a}
        while not self._closed.is_set():
            if not self._moving.wait(timeout=0.2):
                continue
            ready, _, _ = select.select([a, b], [], [], 0.2)
            for sock in ready:
                try:
                    data = sock.recv(65536)
                    if not data:
                        raise OSError("closed")
                    peer[sock].sendall(data)
                except OSError:
                    a.close()
                    b.close()
                    return
