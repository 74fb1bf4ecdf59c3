"""What viewers get: the newest views, encoded once per frame per camera and size, newest only.

Everything here runs on the web server's event loop, except the encoding itself (an executor:
OpenCV releases the GIL) and `Feed.offer_views`, which the run's main thread calls.

- The run's thread hands the newest views over by reference (`offer_views`); only while someone
  watches does it also wake the loop (coalesced: one wake-up however many views arrive meanwhile).
- A `Stream` is one picture kind of one camera (tile, full size, full size with the HUD drawn in;
  tile or full size in H.264, one live encoder each: fmp4.py) or the mosaic. It runs only while
  it has subscribers: it waits for a newer picture, keeps to its frame-rate cap, encodes once and
  hands the result to every subscriber. Nobody subscribed: no task, no encoding.
- A `Viewer` (a page's WebSocket, an MJPEG response) holds one slot per stream it follows: a
  newer item replaces the older one, so a slow viewer skips frames and never queues them. H.264
  pieces depend on each other: there a keyframe replaces what waits, and a viewer too far behind
  skips to the next keyframe (`PieceQueue`).
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections import Counter
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

import cv2
import numpy as np

from ..mosaic import Tile, compose, render_tile, tile_size_to_fit
from ..render import draw_hud
from ..sources import mask_url
from ..stages import View
from .fmp4 import LiveH264
from .state import camera_state, outputs_state

# Picture kinds.
TILE = "tile"  # scaled to the tile width, capped fps (the page's grid)
FULL = "full"  # full size at the camera's own rate (the page's enlarged camera)
HUD = "hud"  # full size with the HUD and banner drawn in (/camera/NAME.mjpg: a player shows nothing else)
MOSAIC = "mosaic"  # every camera in one picture (/mosaic.mjpg)
H264_TILE = "h264-tile"  # as TILE, H.264 in fragmented MP4 (the page on a slow link)
H264_FULL = "h264-full"  # as FULL, H.264
KINDS = (TILE, FULL, HUD, MOSAIC, H264_TILE, H264_FULL)
KIND_CODES = {TILE: 0, FULL: 1, HUD: 2, MOSAIC: 3, H264_TILE: 4, H264_FULL: 5}
H264_KINDS = (H264_TILE, H264_FULL)
INIT_FLAG = 0x80  # on the kind code: the message is an H.264 init segment (after the name: codec
#                   string length (uint8), codec string, then ftyp + moov), not a picture
JPEG, H264 = "jpeg", "h264"  # what a page asks for
MAX_BACKLOG = 60  # H.264 pieces a viewer may have waiting before it skips to the next keyframe

MOSAIC_KEY = ("", MOSAIC)
STATE_KEY = ("", "state")
STATE_EVERY_S = 0.5  # the state message's pace while figures change (a state change goes at once)
BURST = 1.5  # pictures a capped stream may send back to back (absorbs the jitter of a source at the cap)

# A binary WebSocket message: this header, the camera's name (UTF-8), then the JPEG.
# magic "SJ", version 1, kind code, frame index (uint32, 0xFFFFFFFF: none), name length (uint16).
HEADER = struct.Struct(">2sBBIH")
MAGIC = b"SJ"
VERSION = 1
NO_INDEX = 0xFFFFFFFF

Key = Tuple[str, str]  # (camera name, kind); the mosaic's name is ""


def ws_header(name: str, kind: str, index: Optional[int], init: bool = False) -> bytes:
    raw = name.encode("utf-8")
    code = NO_INDEX if index is None or not 0 <= index < NO_INDEX else index
    return HEADER.pack(MAGIC, VERSION, KIND_CODES[kind] | (INIT_FLAG if init else 0), code, len(raw)) + raw


def parse_ws_message(data: bytes) -> Tuple[str, str, bool, Optional[int], bytes]:
    """(camera name, kind, init segment?, frame index or None, payload) of a binary message."""
    magic, version, code, index, length = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise ValueError("not a streamer frame message")
    start = HEADER.size
    name = data[start:start + length].decode("utf-8")
    kind = {v: k for k, v in KIND_CODES.items()}[code & ~INIT_FLAG]
    return name, kind, bool(code & INIT_FLAG), (None if index == NO_INDEX else index), data[start + length:]


@dataclass(frozen=True)
class Encoding:
    """How pictures are encoded (shared by every stream)."""

    tile_width: int = 640
    tile_fps: float = 15.0
    mosaic_size: Tuple[int, int] = (1280, 720)
    mosaic_fps: float = 15.0
    hud_fps: float = 0.0  # 0: the camera's own rate
    quality: int = 75
    h264_preset: str = "veryfast"
    h264_crf: int = 26
    key_every_s: float = 1.0

    def __post_init__(self):
        if self.tile_width < 32:
            raise ValueError(f"tiles need at least 32 pixels of width, not {self.tile_width}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"JPEG quality is 1..100, not {self.quality}")
        if self.tile_fps < 0 or self.mosaic_fps < 0 or self.hud_fps < 0:
            raise ValueError("frame-rate caps must be >= 0 (0: no cap)")

    def jpeg(self, image: np.ndarray) -> bytes:
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return data.tobytes()

    def tile(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if w <= self.tile_width:
            return image
        height = max(1, round(h * self.tile_width / w))
        while image.shape[1] >= 2 * self.tile_width:  # halve while far too big: fast, no aliasing
            image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
        return cv2.resize(image, (self.tile_width, height), interpolation=cv2.INTER_AREA)


class Item(NamedTuple):
    """One encoded picture: what an MJPEG viewer writes and what a WebSocket viewer sends."""

    jpeg: bytes
    message: bytes  # header + JPEG


class Piece(NamedTuple):
    """One H.264 picture for the page: its media segment, and for a keyframe the init message."""

    message: bytes  # header + moof + mdat
    key: bool
    init_message: Optional[bytes]  # header (init flag) + codec string + ftyp + moov; keyframes only


class PieceQueue:
    """A viewer's waiting H.264 pieces of one stream. Pieces depend on each other, so a viewer
    cannot skip one alone: a keyframe replaces whatever still waits (the newest picture again),
    and a viewer too far behind drops all and waits for the next keyframe."""

    def __init__(self):
        self.items: List[Piece] = []
        self.need_key = True
        self.sent_init: Optional[bytes] = None  # the init message this viewer's player has

    def add(self, piece: Piece) -> bool:
        """False when the piece was dropped because a keyframe is needed first."""
        if piece.key:
            self.items = [piece]
            self.need_key = False
            return True
        if self.need_key:
            return False
        self.items.append(piece)
        if len(self.items) > MAX_BACKLOG:
            self.items, self.need_key = [], True
            return False
        return True

    def take(self) -> List[Piece]:
        items, self.items = self.items, []
        return items


class Viewer:
    """A page's WebSocket or an MJPEG response: the newest item of each stream it follows (JPEG,
    state), or for H.264 the pieces since the newest keyframe (a PieceQueue)."""

    def __init__(self, kind: str):
        self.kind = kind  # "ws" or "mjpeg"
        self.keys: Set[Key] = set()
        self.enlarged: Optional[str] = None  # ws: the camera shown full size (None: every tile)
        self.codec = JPEG  # ws: what the page asked for
        self.queues: Dict[Key, PieceQueue] = {}
        self.closing: Optional[str] = None  # why the server ends this viewer (set once)
        self._pending: Dict[Key, object] = {}
        self._wake = asyncio.Event()

    def offer(self, key: Key, item: object) -> None:
        """Replace this stream's pending item (a slow viewer skips, never queues)."""
        self._pending[key] = item
        self._wake.set()

    def offer_piece(self, key: Key, piece: Piece) -> bool:
        """Queue an H.264 piece; False when this viewer waits for a keyframe."""
        queue = self.queues.setdefault(key, PieceQueue())
        added = queue.add(piece)
        if queue.items:
            self._pending[key] = queue
            self._wake.set()
        return added

    def forget(self, key: Key) -> None:
        self.queues.pop(key, None)
        self._pending.pop(key, None)

    def close(self, reason: str) -> None:
        if self.closing is None:
            self.closing = reason
        self._wake.set()

    async def next(self, timeout: Optional[float] = None) -> List[Tuple[Key, object]]:
        """The pending items, oldest stream first; [] after `timeout` seconds without any, or when
        the viewer is closing and all was handed out."""
        if not self._pending and self.closing is None:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                return []
        self._wake.clear()
        items, self._pending = list(self._pending.items()), {}
        return items


class Camera:
    """What the loop knows of one camera: its newest view and change counters."""

    def __init__(self, view: View):
        self.view = view
        self.image: Optional[np.ndarray] = None
        self.image_seq = 0  # bumps when a new image arrives
        self.look: Tuple = ()
        self.look_seq = 0  # bumps when the state or banner changes (what an offline picture says)
        self.update(view)

    def update(self, view: View) -> bool:
        """Take a newer view; True when its state or banner changed."""
        self.view = view
        if view.image is not None and view.image is not self.image:
            self.image = view.image  # held: identity stays meaningful while we compare
            self.image_seq += 1
        look = (view.state, view.banner)
        if look != self.look:
            self.look = look
            self.look_seq += 1
            return True
        return False


class Stream:
    """One picture kind of one camera (or the mosaic): encoded only while someone follows it."""

    def __init__(self, feed: "Feed", key: Key):
        self.feed = feed
        self.key = key
        self.name, self.kind = key
        self.subscribers: Set[Viewer] = set()
        self.latest: Optional[Item] = None
        self.task: Optional[asyncio.Task] = None
        enc = feed.encoding
        self.max_fps = {TILE: enc.tile_fps, FULL: 0.0, HUD: enc.hud_fps, MOSAIC: enc.mosaic_fps,
                        H264_TILE: enc.tile_fps, H264_FULL: 0.0}[self.kind]
        self.encoder: Optional[LiveH264] = None
        if self.kind in H264_KINDS:
            self.encoder = LiveH264(enc.key_every_s, enc.h264_preset, enc.h264_crf)
        self.restarts = 0  # H.264: bumped for each new viewer, which needs a keyframe of the picture now

    def version(self) -> Tuple[int, int]:
        """What must change for a new picture: the image; for pictures with text drawn in, the state too."""
        if self.kind == MOSAIC:
            return self.feed.mosaic_version()
        cam = self.feed.cameras.get(self.name)
        if cam is None:
            return (-1, -1)
        if self.kind == HUD:
            return (cam.image_seq, cam.look_seq)
        return (cam.image_seq if cam.image is not None else -1, self.restarts)

    def subscribe(self, viewer: Viewer) -> None:
        self.subscribers.add(viewer)
        if self.encoder is not None:
            # The new viewer starts at a keyframe of the picture now, also when no newer one comes
            # (a frozen or offline camera): the same picture is encoded again.
            self.encoder.want_key()
            self.restarts += 1
            self.feed.notify()
        elif self.latest is not None:
            viewer.offer(self.key, self.latest)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run(), name=f"web stream {self.key}")

    def unsubscribe(self, viewer: Viewer) -> None:
        self.subscribers.discard(viewer)
        viewer.forget(self.key)
        if not self.subscribers and self.task is not None:
            self.task.cancel()
            self.task = None
            self.latest = None  # a later viewer gets a fresh picture, not this one
            if self.encoder is not None:  # off the loop: it waits for a picture being encoded now
                try:
                    self.feed.executor.submit(self.encoder.close)
                except RuntimeError:  # the pool is shut down: nothing encodes any more
                    self.encoder.close()

    async def _run(self) -> None:
        """Encode each newer picture at once, within the frame-rate cap.

        The cap is a token bucket (credit refills at max_fps per second, up to BURST): a picture
        is sent as soon as it arrives when there is credit, so the cap adds no latency; above the
        cap, pictures are skipped (a newer one comes soon), and a picture with no successor
        within the refill time is sent then."""
        loop = asyncio.get_running_loop()
        done = (-1, -1)
        credit, refilled = BURST, loop.time()
        while True:
            await self.feed.wait_change(self.version, done)
            if self.max_fps > 0:
                now = loop.time()
                credit, refilled = min(BURST, credit + (now - refilled) * self.max_fps), now
                if credit < 1.0:
                    seen = self.version()
                    try:
                        await asyncio.wait_for(self.feed.wait_change(self.version, seen),
                                               (1.0 - credit) / self.max_fps)
                        continue  # a newer picture came meanwhile: look again with it
                    except asyncio.TimeoutError:
                        now = loop.time()
                        credit, refilled = max(1.0, credit + (now - refilled) * self.max_fps), now
                credit -= 1.0
            done = self.version()
            job = self._job()
            if job is None:
                continue
            try:
                item = await loop.run_in_executor(self.feed.executor, job)
            except Exception as err:  # a bad picture must not end the stream for every viewer
                self.feed.log_error(f"cannot encode {self.key}: {err}")
                continue
            if item is None:
                continue
            self.feed.encodes[self.key] += 1
            if isinstance(item, Piece):
                for viewer in list(self.subscribers):
                    if not viewer.offer_piece(self.key, item):
                        self.encoder.want_key()
                continue
            self.latest = item
            for viewer in list(self.subscribers):
                viewer.offer(self.key, item)

    def _job(self) -> Optional[Callable[[], Item]]:
        """The encoding to run off the loop, from the views as they are now."""
        enc = self.feed.encoding
        kind = self.kind
        if kind == MOSAIC:
            views = [c.view for c in self.feed.ordered()]
            if not views:
                return None
            tiles = [Tile(v.image, self.feed.safe(v.name), tuple(self.feed.safe_lines(v.hud)), self.feed.safe(v.banner))
                     for v in views]
            header = ws_header("", MOSAIC, None)

            def mosaic() -> Item:
                size = tile_size_to_fit(len(tiles), enc.mosaic_size)
                jpeg = enc.jpeg(compose(tiles, size))
                return Item(jpeg, header + jpeg)

            return mosaic
        cam = self.feed.cameras.get(self.name)
        if cam is None:
            return None
        view, image = cam.view, cam.image
        index = view.frame.index if view.frame is not None else None
        header = ws_header(self.name, kind, index)
        if kind == HUD:
            hud, banner = tuple(self.feed.safe_lines(view.hud)), self.feed.safe(view.banner)

            def drawn() -> Item:
                if image is None:
                    picture = render_tile(Tile(None, self.name, hud, banner))
                else:
                    picture = draw_hud(image, list(hud), banner) if (hud or banner) else image
                jpeg = enc.jpeg(picture)
                return Item(jpeg, header + jpeg)

            return drawn
        if image is None:
            return None
        if kind in H264_KINDS:
            encoder = self.encoder
            when = view.frame.wall_time if view.frame is not None else asyncio.get_running_loop().time()
            name = self.name

            def h264() -> Optional[Piece]:
                piece = encoder.encode(enc.tile(image) if kind == H264_TILE else image, when)
                if piece is None:
                    return None
                init = None
                if piece.key:
                    codec = piece.codec.encode("ascii")
                    init = ws_header(name, kind, None, init=True) + bytes([len(codec)]) + codec + piece.init
                return Piece(header + piece.fragment, piece.key, init)

            return h264

        def plain() -> Item:
            jpeg = enc.jpeg(enc.tile(image) if kind == TILE else image)
            return Item(jpeg, header + jpeg)

        return plain


class Feed:
    """The loop's side of the web display: cameras, streams, viewers, the state message."""

    def __init__(self, executor: Executor, encoding: Encoding = Encoding(),
                 name_of: Optional[Callable[[int], str]] = None, max_viewers: int = 8,
                 log: Optional[Callable[[str], None]] = None):
        if max_viewers < 1:
            raise ValueError(f"max_viewers must be at least 1, not {max_viewers}")
        self.executor = executor
        self.encoding = encoding
        self.name_of = name_of
        self.max_viewers = max_viewers
        self.cameras: Dict[str, Camera] = {}
        self.order: Tuple[str, ...] = ()
        self.streams: Dict[Key, Stream] = {}
        self.viewers: Set[Viewer] = set()
        self.encodes: Counter = Counter()  # pictures encoded, by (camera, kind)
        self.ended = False  # the run is over (the display is closing)
        self._log = log
        self._logged: Set[str] = set()  # what was logged once already
        self._changed: Optional[asyncio.Event] = None
        self._state_now: Optional[asyncio.Event] = None
        self._state_task: Optional[asyncio.Task] = None
        self._no_viewers: Optional[asyncio.Event] = None
        self._latest_views: Tuple[View, ...] = ()
        self._wake_pending = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self.watched = False  # read by the run's thread: wake the loop only while someone watches

    # -- the run's thread --------------------------------------------------------------------

    def offer_views(self, views: Sequence[View]) -> None:
        """Called by the display's show() on the run's thread: keep a reference; wake the loop
        only while someone watches (and only once until it has looked)."""
        self._latest_views = tuple(views)
        if self.watched and not self._wake_pending and self._loop is not None:
            self._wake_pending = True
            try:
                self._loop.call_soon_threadsafe(self._take_views)
            except RuntimeError:  # the loop is closed: the display is stopping
                pass

    # -- the loop ----------------------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called on the loop before serving."""
        self._loop = loop
        self._changed = asyncio.Event()
        self._state_now = asyncio.Event()
        self._no_viewers = asyncio.Event()
        self._no_viewers.set()

    def _take_views(self) -> None:
        self._wake_pending = False  # first: views offered from now on wake the loop again
        self.refresh()

    def refresh(self) -> None:
        """Take the newest views the run offered."""
        self.update(self._latest_views)

    def update(self, views: Sequence[View]) -> None:
        state_changed = False
        names = []
        for view in views:
            name = self.safe(view.name)
            names.append(name)
            cam = self.cameras.get(name)
            if cam is None:
                self.cameras[name] = Camera(view)
                state_changed = True
            elif cam.update(view):
                state_changed = True
        if tuple(names) != self.order:
            self.order = tuple(names)
            state_changed = True
            for viewer in list(self.viewers):
                if viewer.kind == "ws":
                    self.follow(viewer, viewer.enlarged)
        self.notify()
        if state_changed and self._state_now is not None:
            self._state_now.set()

    def notify(self) -> None:
        """Wake every stream to look at its version again."""
        event, self._changed = self._changed, asyncio.Event()
        if event is not None:
            event.set()

    async def wait_change(self, version: Callable[[], Tuple[int, int]], seen: Tuple[int, int]) -> None:
        while version() == seen or version()[0] < 0:
            await self._changed.wait()

    def ordered(self) -> List[Camera]:
        return [self.cameras[n] for n in self.order if n in self.cameras]

    def mosaic_version(self) -> Tuple[int, int]:
        cams = self.ordered()
        if not cams:
            return (-1, -1)
        return (sum(c.image_seq for c in cams), sum(c.look_seq for c in cams) + len(cams))

    # -- viewers -----------------------------------------------------------------------------

    def admit(self, kind: str) -> Optional[Viewer]:
        """A new viewer, or None when `max_viewers` already watch. What may fail (the first
        state message) comes before the viewer is counted: a failure holds no slot."""
        if len(self.viewers) >= self.max_viewers or self.ended:
            return None
        self.refresh()  # the views as they are now, before the first wake-up
        first = self.state_message() if kind == "ws" else None
        viewer = Viewer(kind)
        self.viewers.add(viewer)
        self._no_viewers.clear()
        self.watched = True
        if first is not None:
            viewer.offer(STATE_KEY, first)
            if self._state_task is None:
                self._state_task = asyncio.get_running_loop().create_task(self._state_loop(), name="web state")
        return viewer

    def leave(self, viewer: Viewer) -> None:
        for key in list(viewer.keys):
            self._unsubscribe(viewer, key)
        self.viewers.discard(viewer)
        if not self.viewers:
            self.watched = False
            self._no_viewers.set()
        if not any(v.kind == "ws" for v in self.viewers) and self._state_task is not None:
            self._state_task.cancel()
            self._state_task = None

    def subscribe(self, viewer: Viewer, key: Key) -> None:
        if key in viewer.keys:
            return
        viewer.keys.add(key)
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = Stream(self, key)
        stream.subscribe(viewer)

    def _unsubscribe(self, viewer: Viewer, key: Key) -> None:
        viewer.keys.discard(key)
        stream = self.streams.get(key)
        if stream is not None:
            stream.unsubscribe(viewer)
            if not stream.subscribers:
                del self.streams[key]

    def follow(self, viewer: Viewer, enlarged: Optional[str], codec: Optional[str] = None) -> None:
        """A page's pictures: every camera's tile, or one camera full size; JPEG or H.264."""
        if enlarged is not None and enlarged not in self.cameras:
            enlarged = None
        viewer.enlarged = enlarged
        if codec in (JPEG, H264):
            viewer.codec = codec
        tile, full = (H264_TILE, H264_FULL) if viewer.codec == H264 else (TILE, FULL)
        wanted = {(enlarged, full)} if enlarged is not None else {(n, tile) for n in self.order}
        for key in list(viewer.keys - wanted):
            self._unsubscribe(viewer, key)
        for key in sorted(wanted - viewer.keys):
            self.subscribe(viewer, key)

    def close_all(self, reason: str) -> None:
        """The display is closing: say so to every page and end every viewer."""
        self.ended = True
        self.refresh()
        message = self.state_message()
        end = json.dumps({"type": "end", "reason": reason})
        for viewer in list(self.viewers):
            if viewer.kind == "ws":
                viewer.offer(STATE_KEY, message)
                viewer.offer(("", "end"), end)
            viewer.close(reason)

    async def wait_no_viewers(self, timeout: float) -> bool:
        """Until every viewer has left (True), or `timeout` seconds (False)."""
        try:
            await asyncio.wait_for(self._no_viewers.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    # -- the state message -------------------------------------------------------------------

    @staticmethod
    def safe(text: Optional[str]) -> Optional[str]:
        return None if text is None else mask_url(str(text))

    def safe_lines(self, lines: Sequence[str]) -> List[str]:
        return [self.safe(line) for line in lines]

    def state(self) -> dict:
        return {
            "cameras": [camera_state(c.view, self.name_of) for c in self.ordered()],
            "event_outputs": outputs_state([c.view for c in self.ordered()]),
            "ended": self.ended,
            "viewers": len(self.viewers),
            "max_viewers": self.max_viewers,
        }

    def state_message(self) -> str:
        return json.dumps({"type": "state", **self.state()}, separators=(",", ":"), allow_nan=False)

    async def _state_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._state_now.wait(), STATE_EVERY_S)
            except asyncio.TimeoutError:
                pass
            self._state_now.clear()
            try:
                message = self.state_message()
            except Exception as err:  # one bad view must not end the state of every page for good
                self._log_once("state", f"cannot send the cameras' state: {err!r}")
                continue
            for viewer in list(self.viewers):
                if viewer.kind == "ws":
                    viewer.offer(STATE_KEY, message)

    def log_error(self, text: str) -> None:
        if self._log is not None:
            self._log(self.safe(text))

    def _log_once(self, what: str, text: str) -> None:
        if what not in self._logged:
            self._logged.add(what)
            self.log_error(text)
