"""`WebDisplay`: the browser live view as a `stages.Display`.

    with WebDisplay("127.0.0.1", 8080, name_of=names.get, token=load_token(path)) as web:
        print("live view:", web.url)
        while running:
            web.show(views)          # on the run's thread, every time something changed

show() keeps a reference to the newest views and returns True (a page never asks the run to
stop). The server (aiohttp) runs its own event loop in a daemon thread, like the metrics
endpoint; pictures are encoded there (in a small thread pool) only while someone watches, once
per frame per camera and size, whoever watches. The socket is bound in start(), on the caller's
thread, so a port in use is an error there (PortInUse, the metrics port's exit code).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Optional, Sequence, Tuple

from aiohttp import web

from ..errors import PortInUse, ServerStartError
from ..stages import View
from .app import make_app
from .feed import Encoding, Feed, Key

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_VIEWERS = 8
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
GOODBYE_S = 2.0  # how long stop() lets pages receive the last state and the "ended" message

log = logging.getLogger("streamer.web")


def url_host(host: str) -> str:
    """The host as it goes in a URL: a wildcard bind is reached on loopback; IPv6 in brackets."""
    if host in ("", "0.0.0.0"):
        return LOOPBACK
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def parse_bind(text: str, default_host: str = LOOPBACK) -> Tuple[str, int]:
    """`PORT`, `HOST:PORT` or `[V6]:PORT` -> (host, port); ValueError with the reason otherwise."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = default_host, text
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:8080")
    if not host:
        raise ValueError(f"{text!r}: the host before ':' is empty (write PORT or HOST:PORT)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one), or a ServerStartError that says why not."""
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ServerStartError(f"cannot serve the web page on {where}: {host} is not a known host name; "
                               f"fix --web (PORT, or HOST:PORT with 127.0.0.1 or 0.0.0.0)") from err
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart reuses the port at once
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise PortInUse(f"web port {port} on {host} is already in use (another streamer?); "
                            f"choose another with --web [HOST:]PORT") from err
        if err.errno == errno.EACCES:
            raise ServerStartError(f"not allowed to listen on {where} for the web page (ports below 1024 need "
                                   f"root); choose another with --web [HOST:]PORT") from err
        if err.errno == errno.EADDRNOTAVAIL:
            raise ServerStartError(f"cannot serve the web page on {where}: {host} is not an address of this "
                                   f"machine; fix --web (127.0.0.1, or 0.0.0.0 for every interface)") from err
        raise ServerStartError(f"cannot serve the web page on {where}: {err.strerror or err}; "
                               f"check --web") from err
    return sock


class WebDisplay:
    """The browser live view of every camera: a `stages.Display`.

    host, port: where to listen (port 0: a free port; read `port` after start()).
    name_of: class id -> class name, for the detections in the state JSON (None: the ids).
    token: None for no token; else every route needs it (see security.py).
    allowed_hosts: host names the Host header may carry besides loopback names and `host`.
    max_viewers: WebSockets + MJPEG streams at once; the next is refused (503 / close 1013).
    tile_width, tile_fps: the page's tiles (scaled down to this width, at most this rate);
    the enlarged camera goes full size at its own rate.
    mosaic_size, mosaic_fps: /mosaic.mjpg fits in this size, at most this rate.
    jpeg_quality: 1..100. encode_threads: the encoding pool's size.
    """

    def __init__(
        self,
        host: str = LOOPBACK,
        port: int = DEFAULT_PORT,
        *,
        name_of: Optional[Callable[[int], str]] = None,
        token: Optional[str] = None,
        allowed_hosts: Sequence[str] = (),
        max_viewers: int = DEFAULT_MAX_VIEWERS,
        tile_width: int = 640,
        tile_fps: float = 15.0,
        mosaic_size: Tuple[int, int] = (1280, 720),
        mosaic_fps: float = 15.0,
        jpeg_quality: int = 75,
        encode_threads: int = 2,
    ):
        if token is not None and not token:
            raise ValueError("an empty token: pass None for no token")
        self.host = host
        self.port = int(port)
        self.token = token
        self.allowed_hosts = tuple(allowed_hosts)
        self._executor = ThreadPoolExecutor(max_workers=max(1, encode_threads),
                                            thread_name_prefix="streamer-web-encode")
        self.feed = Feed(self._executor, Encoding(tile_width, tile_fps, tuple(mosaic_size), mosaic_fps,
                                                  quality=jpeg_quality),
                         name_of=name_of, max_viewers=max_viewers, log=log.warning)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._runner: Optional[web.AppRunner] = None

    # -- the Display protocol ----------------------------------------------------------------

    def show(self, views: Sequence[View]) -> bool:
        """Keep the newest views (by reference); wake the server only while someone watches."""
        self.feed.offer_views(views)
        return True

    def __enter__(self) -> "WebDisplay":
        if self._loop is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- lifetime ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The page's address (without the token)."""
        return f"http://{url_host(self.host)}:{self.port}/"

    def start(self) -> "WebDisplay":
        if self._loop is not None:
            raise RuntimeError("the web display is already started")
        sock = bind_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="streamer-web", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._serve(sock), loop).result(START_TIMEOUT_S)
        except BaseException:
            sock.close()
            self._halt()
            raise
        return self

    async def _serve(self, sock: socket.socket) -> None:
        self.feed.bind(asyncio.get_running_loop())
        app = make_app(self.feed, port=self.port, bind_host=self.host, token=self.token,
                       allowed_hosts=self.allowed_hosts)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        await web.SockSite(runner, sock).start()

    async def _shutdown(self) -> None:
        self.feed.close_all("the run has ended")
        await self.feed.wait_no_viewers(GOODBYE_S)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def stop(self) -> None:
        """Say goodbye to every page, close every connection and the socket (the port is free
        again), and join the server's thread."""
        loop = self._loop
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(STOP_TIMEOUT_S)
        except Exception as err:  # a stuck shutdown must not keep the run from ending
            log.warning("the web server did not stop cleanly: %s", err)
        self._halt()

    def _halt(self) -> None:
        loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None:
            return

        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(cancel_rest(), loop).result(STOP_TIMEOUT_S)
        except Exception:
            pass
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(STOP_TIMEOUT_S)
        if not loop.is_running():
            loop.close()
        self._executor.shutdown(wait=True)

    # -- figures for tests and the benchmark -------------------------------------------------

    def _on_loop(self, fn):
        loop = self._loop
        if loop is None:
            return fn()

        async def call():
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(STOP_TIMEOUT_S)

    @property
    def viewers(self) -> int:
        """WebSockets and MJPEG streams open now."""
        return self._on_loop(lambda: len(self.feed.viewers))

    def encode_counts(self) -> Dict[Key, int]:
        """Pictures encoded so far, by (camera, kind); the mosaic is ("", "mosaic")."""
        return self._on_loop(lambda: dict(self.feed.encodes))

    @property
    def encodes(self) -> int:
        """Pictures encoded so far, all cameras and kinds."""
        return sum(self.encode_counts().values())
