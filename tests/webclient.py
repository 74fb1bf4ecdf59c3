"""Plain clients for the web display's tests: http.client requests, MJPEG parts, a WebSocket.

Nothing here knows the server's code: MJPEG is parsed from the bytes (boundary from the
Content-Type header) and pictures decoded with cv2.imdecode; WebSocket messages are read with
websocket-client and the binary header parsed as the page's app.js does.
"""

from __future__ import annotations

import http.client
import json
import re
import struct
import time
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
import websocket

HOST = "127.0.0.1"


def get(port: int, path: str, headers: Optional[Dict[str, str]] = None, method: str = "GET",
        timeout: float = 10) -> Tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.msg, response.read()
    finally:
        conn.close()


def decode_jpeg(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return np.ascontiguousarray(image[:, :, ::-1])  # RGB


class Mjpeg:
    """A multipart/x-mixed-replace response read part by part."""

    def __init__(self, port: int, path: str, headers: Optional[Dict[str, str]] = None, timeout: float = 10):
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        self.conn.request("GET", path, headers=headers or {})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        kind = self.response.getheader("Content-Type", "")
        match = re.match(r"multipart/x-mixed-replace;\s*boundary=\"?([^\";]+)\"?", kind)
        self.boundary = match.group(1).encode() if match else None
        self._buffer = b""

    def _fill(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise AssertionError("no MJPEG part in time")
        chunk = self.response.read1(65536)
        if not chunk:
            raise AssertionError("the MJPEG stream ended")
        self._buffer += chunk

    def parts(self, timeout: float = 20) -> Iterator[Tuple[Dict[str, str], bytes]]:
        """(headers, body) of each part; checks the delimiter line before every part."""
        assert self.boundary, "no boundary in the Content-Type"
        delimiter = b"--" + self.boundary + b"\r\n"
        deadline = time.monotonic() + timeout
        while True:
            while b"\r\n\r\n" not in self._buffer:
                self._fill(deadline)
            assert self._buffer.startswith(delimiter), self._buffer[:80]
            head_end = self._buffer.index(b"\r\n\r\n")
            headers = {}
            for line in self._buffer[len(delimiter):head_end].decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers["content-length"])
            body_start = head_end + 4
            while len(self._buffer) < body_start + length + 2:
                self._fill(deadline)
            body = self._buffer[body_start:body_start + length]
            assert self._buffer[body_start + length:body_start + length + 2] == b"\r\n", \
                "a part does not end with CRLF after Content-Length bytes"
            self._buffer = self._buffer[body_start + length + 2:]
            yield headers, body

    def images(self, count: int, timeout: float = 20) -> List[np.ndarray]:
        out = []
        for headers, body in self.parts(timeout):
            assert headers["content-type"] == "image/jpeg"
            out.append(decode_jpeg(body))
            if len(out) == count:
                return out
        return out

    def close(self) -> None:
        self.response.close()
        self.conn.close()

    def __enter__(self) -> "Mjpeg":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


HEADER = struct.Struct(">2sBBIH")


def parse_frame(data: bytes) -> Tuple[str, int, Optional[int], bytes]:
    """(camera name, kind code, frame index or None, JPEG) of a binary WebSocket message."""
    magic, version, kind, index, length = HEADER.unpack_from(data)
    assert magic == b"SJ" and version == 1, data[:4]
    start = HEADER.size
    return data[start:start + length].decode(), kind, (None if index == 0xFFFFFFFF else index), data[start + length:]


class Socket:
    """The page's WebSocket from a test: messages as ("text", dict), ("binary", bytes) or
    ("close", (code, reason))."""

    def __init__(self, port: int, path: str = "/ws", headers: Optional[List[str]] = None,
                 origin: Optional[str] = None, timeout: float = 10):
        self.ws = websocket.create_connection(f"ws://{HOST}:{port}{path}", header=headers or [],
                                              origin=origin, timeout=timeout)
        self.texts: List[str] = []  # every text message received, raw
        self.closed: Optional[Tuple[int, str]] = None

    def receive(self) -> Tuple[str, object]:
        opcode, data = self.ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_TEXT:
            text = data.decode()
            self.texts.append(text)
            return "text", json.loads(text)
        if opcode == websocket.ABNF.OPCODE_BINARY:
            return "binary", data
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = struct.unpack(">H", data[:2])[0] if len(data) >= 2 else None
            self.closed = (code, data[2:].decode(errors="replace"))
            return "close", self.closed
        return "control", data

    def until(self, predicate, timeout: float = 20, what: str = "a message"):
        """Receive until predicate(kind, value) is true; returns that (kind, value)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kind, value = self.receive()
            if predicate(kind, value):
                return kind, value
            if kind == "close":
                raise AssertionError(f"closed {value} while waiting for {what}")
        raise AssertionError(f"timed out waiting for {what}")

    def send(self, message: dict) -> None:
        self.ws.send(json.dumps(message))

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass

    def __enter__(self) -> "Socket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
