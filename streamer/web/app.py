"""The aiohttp application: routes, the guard in front of them, the page's files.

    GET /                     the page (static/index.html; its script and style are files)
    GET /static/{file}        app.js, style.css
    GET /api/state            JSON: every camera's state, figures and last detections
    GET /ws                   one WebSocket per page: every camera's JPEGs + the state JSON
    GET /camera/{name}.mjpg   multipart/x-mixed-replace MJPEG of one camera (HUD drawn in)
    GET /mosaic.mjpg          the same for the mosaic of every camera

A WebSocket or an MJPEG response is a viewer; at most `max_viewers` at once (the next one gets
503, or close code 1013 on a WebSocket, with the reason). A viewer's slot is released in a
`finally`, whatever fails while it is served.

The guard (security.py): GET only; the Host; requests a browser makes for a page of another
origin refused on every route that carries pictures or state (`/api/state`, `/ws`, `*.mjpg`);
the token (header, cookie, or the raw `?token=`).
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import Dict, Optional, Tuple

from aiohttp import WSMsgType, web

from . import security
from .feed import HUD, MOSAIC_KEY, Feed, Item, PieceQueue

BOUNDARY = "streamerframe"
CLOSE_TRY_AGAIN = 1013  # WebSocket "Try Again Later": too many viewers
CLOSE_GOING_AWAY = 1001  # the run ended / the server stops
IDLE_CHECK_S = 1.0  # an MJPEG viewer without pictures checks its connection this often
WS_HEARTBEAT_S = 15.0  # pings find dead peers (a dropped port-forward) within about this

STATIC = {
    "app.js": "text/javascript",
    "style.css": "text/css",
}

_CONFIG = web.AppKey("config", dict)
_FEED = web.AppKey("feed", Feed)
_FILES = web.AppKey("files", dict)


def _static_files() -> Dict[str, bytes]:
    folder = resources.files(__package__) / "static"
    return {name: (folder / name).read_bytes() for name in ("index.html", *STATIC)}


def too_many(max_viewers: int) -> str:
    return (f"too many viewers: this page serves at most {max_viewers} at once (--web-max-viewers); "
            f"close another tab or player and try again")


def make_app(feed: Feed, *, port: int, bind_host: str, token: Optional[str] = None,
             allowed_hosts=()) -> web.Application:
    """The application for one display. `port` names the token cookie; `bind_host` and
    `allowed_hosts` are the names the Host header may carry besides loopback names."""
    policy = security.HostPolicy(bind_host, allowed_hosts)
    cookie = security.cookie_name(port)

    @web.middleware
    async def guard(request: web.Request, handler):
        if request.method != "GET":
            raise web.HTTPMethodNotAllowed(request.method, ["GET"], text="only GET is served here\n")
        host = request.headers.get("Host")
        if not policy.allows(host):
            raise web.HTTPForbidden(text="this host name is not served here; add it with --web-allowed-hosts\n")
        scheme = policy.scheme(request.scheme, host, request.headers.get("X-Forwarded-Proto"))
        if _carries_pictures(request.path) and not policy.from_own_page(request.headers, scheme, host):
            raise web.HTTPForbidden(
                text="pictures and state are served to this page's own origin only; a page elsewhere that "
                     "embeds them needs its host in --web-allowed-hosts\n")
        if token is not None:
            query = security.query_token(request.rel_url.raw_query_string)
            accepted = (security.token_matches(security.bearer(request.headers.get("Authorization")), token)
                        or security.token_matches(request.cookies.get(cookie), token))
            by_query = security.token_matches(query, token)
            if not (accepted or by_query):
                raise web.HTTPUnauthorized(
                    headers={"WWW-Authenticate": 'Bearer realm="streamer"'},
                    text="a token is needed: send 'Authorization: Bearer TOKEN', or open this address "
                         "with ?token=TOKEN\n")
            if query is not None and request.path == "/":
                # The page: keep the token in a cookie, out of the address bar and the history.
                target = request.rel_url.without_query_params(security.TOKEN_PARAM)
                response = web.HTTPSeeOther(location=str(target))
                if by_query:
                    response.set_cookie(cookie, token, httponly=True, samesite="Strict", path="/",
                                        secure=scheme == "https")
                raise response
        return await handler(request)

    async def headers(request: web.Request, response: web.StreamResponse) -> None:
        for name, value in security.SECURITY_HEADERS.items():
            response.headers[name] = value

    app = web.Application(middlewares=[guard])
    app[_FEED] = feed
    app[_FILES] = _static_files()
    app.on_response_prepare.append(headers)
    app.router.add_get("/", page, allow_head=False)
    app.router.add_get("/static/{file}", static, allow_head=False)
    app.router.add_get("/api/state", api_state, allow_head=False)
    app.router.add_get("/ws", websocket, allow_head=False)
    app.router.add_get("/mosaic.mjpg", mosaic_mjpeg, allow_head=False)
    app.router.add_get(r"/camera/{name:.+}.mjpg", camera_mjpeg, allow_head=False)
    return app


def _carries_pictures(path: str) -> bool:
    """The routes with camera pictures or state (the page and its files hold neither)."""
    return path in ("/api/state", "/ws") or path.endswith(".mjpg")


async def page(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_FILES]["index.html"], content_type="text/html", charset="utf-8")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    if name not in STATIC:
        raise web.HTTPNotFound(text="no such file\n")
    return web.Response(body=request.app[_FILES][name], content_type=STATIC[name], charset="utf-8")


async def api_state(request: web.Request) -> web.Response:
    feed = request.app[_FEED]
    feed.refresh()
    return web.json_response(feed.state(), dumps=lambda o: json.dumps(o, allow_nan=False))


async def websocket(request: web.Request) -> web.WebSocketResponse:
    feed = request.app[_FEED]
    ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_S, compress=False, max_msg_size=64 * 1024)
    viewer = writer = None
    try:
        viewer = feed.admit("ws")
        if viewer is None:
            await ws.prepare(request)
            if feed.ended:
                await ws.close(code=CLOSE_GOING_AWAY, message=b"the run has ended")
            else:
                await ws.close(code=CLOSE_TRY_AGAIN, message=too_many(feed.max_viewers).encode()[:123])
            return ws
        await ws.prepare(request)
        feed.follow(viewer, None)
        writer = asyncio.get_running_loop().create_task(_send(ws, viewer), name="web ws writer")
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                _command(feed, viewer, msg.data)
    finally:
        if viewer is not None:
            feed.leave(viewer)
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
    return ws


def _command(feed: Feed, viewer, text: str) -> None:
    """What a page asks: {"type": "view", "camera": NAME or null, "codec": "jpeg" or "h264"}
    (enlarge one camera, or every tile; pictures as JPEG or H.264)."""
    try:
        message = json.loads(text)
    except ValueError:
        return
    if isinstance(message, dict) and message.get("type") == "view":
        camera, codec = message.get("camera"), message.get("codec")
        feed.follow(viewer, camera if isinstance(camera, str) else None, codec if isinstance(codec, str) else None)


async def _send(ws: web.WebSocketResponse, viewer) -> None:
    """The page's one writer: the newest pending item of each stream, until the socket closes or
    the server ends the viewer (then close code 1001 with the reason)."""
    try:
        while not ws.closed:
            items = await viewer.next()
            for _, item in items:
                if isinstance(item, Item):
                    await ws.send_bytes(item.message)
                elif isinstance(item, PieceQueue):
                    for piece in item.take():
                        if piece.init_message is not None and piece.init_message != item.sent_init:
                            await ws.send_bytes(piece.init_message)
                            item.sent_init = piece.init_message
                        await ws.send_bytes(piece.message)
                else:
                    await ws.send_str(item)
            if viewer.closing is not None:
                await ws.close(code=CLOSE_GOING_AWAY, message=viewer.closing.encode()[:123])
                return
    except (ConnectionError, RuntimeError):  # the page went away mid-send: the reader ends too
        pass


async def mosaic_mjpeg(request: web.Request) -> web.StreamResponse:
    return await _mjpeg(request, MOSAIC_KEY)


async def camera_mjpeg(request: web.Request) -> web.StreamResponse:
    feed = request.app[_FEED]
    name = request.match_info["name"]
    feed.refresh()
    if name not in feed.cameras:
        raise web.HTTPNotFound(text="no camera of that name; GET /api/state lists them\n")
    return await _mjpeg(request, (name, HUD))


async def _mjpeg(request: web.Request, key: Tuple[str, str]) -> web.StreamResponse:
    feed = request.app[_FEED]
    viewer = None
    try:
        viewer = feed.admit("mjpeg")
        if viewer is None:
            if feed.ended:
                raise web.HTTPServiceUnavailable(text="the run has ended\n")
            raise web.HTTPServiceUnavailable(text=too_many(feed.max_viewers) + "\n", headers={"Retry-After": "5"})
        response = web.StreamResponse(headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            "Connection": "close",
        })
        await response.prepare(request)
        feed.subscribe(viewer, key)
        while viewer.closing is None:
            items = await viewer.next(IDLE_CHECK_S)
            if not items and (request.transport is None or request.transport.is_closing()):
                break
            for _, item in items:
                if isinstance(item, Item):
                    await response.write(part(item.jpeg))
        return response
    except ConnectionError:  # the player went away mid-write
        return response
    finally:
        if viewer is not None:
            feed.leave(viewer)


def part(jpeg: bytes) -> bytes:
    """One multipart part: boundary, headers, the JPEG."""
    return (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
            + jpeg + b"\r\n")
