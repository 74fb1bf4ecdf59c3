"""A real HTTP server for webhook tests (http.server on a free loopback port) that records every
POST and answers as the test says (500 twice then 200, a slow answer, a 404...)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, List

GARBAGE = "garbage"


class Receiver:
    """An HTTP server that answers each POST with what `answer(n)` says (n: 0-based request number):
    a status code, ("sleep", seconds, code), or GARBAGE (a reply that is not HTTP at all)."""

    def __init__(self, answer: Callable[[int], object]):
        self.requests: List[dict] = []
        self.answer = answer
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    n = len(receiver.requests)
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                              "at": time.monotonic()})
                reply = receiver.answer(n)
                if reply == GARBAGE:  # a receiver that is not an HTTP server (or a broken proxy)
                    self.wfile.write(b"hello there\r\n\r\n")
                    self.close_connection = True
                    return
                if isinstance(reply, tuple):
                    _, seconds, reply = reply
                    time.sleep(seconds)
                try:
                    self.send_response(reply)
                    self.end_headers()
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/s3cr3t-token"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
