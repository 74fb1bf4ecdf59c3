"""H.264 for slow links: a live libx264 encoder and fragmented MP4 for Media Source Extensions.

`LiveH264` encodes RGB pictures (libx264 through PyAV: tune=zerolatency, no B-frames, a profile
every browser's MSE takes, SPS/PPS repeated on every keyframe) and returns one `Piece` per
picture: a `moof` + `mdat` fragment holding that one picture, so nothing waits for the next
picture. A keyframe comes every `key_every_s` seconds, and at once when `want_key()` is called
(a new viewer). Every keyframe piece carries the init segment (`ftyp` + `moov`, its `avcC` built
from the encoder's own SPS/PPS) and the codec string read from the SPS (`avc1.4D401F`).

Not the recording encoder: that one is CRF with a long GOP and B-frames for files.
The boxes are written here (ISO/IEC 14496-12 and -15) rather than by FFmpeg's mp4 muxer, which
holds each fragment back until the next packet arrives.
"""

from __future__ import annotations

import struct
import threading
from fractions import Fraction
from typing import List, NamedTuple, Optional, Tuple

import av
import numpy as np

TIMESCALE = 90000
NAL_IDR, NAL_SEI, NAL_SPS, NAL_PPS, NAL_AUD = 5, 6, 7, 8, 9
SAMPLE_KEY = 0x02000000  # sample_depends_on = 2: depends on no other sample
SAMPLE_DELTA = 0x01010000  # sample_depends_on = 1, sample_is_non_sync_sample = 1
_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)


class Piece(NamedTuple):
    """One encoded picture as an MSE media segment."""

    fragment: bytes  # moof + mdat
    key: bool
    init: Optional[bytes]  # ftyp + moov (keyframes only)
    codec: Optional[str]  # e.g. avc1.4D401F (keyframes only)
    width: int
    height: int


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def nal_units(data: bytes) -> List[bytes]:
    """The NAL units of an Annex B byte stream (start codes 00 00 01 / 00 00 00 01)."""
    units, start, i, n = [], None, 0, len(data)
    while i + 3 <= n:
        if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 1:
            if start is not None:
                units.append(data[start:i].rstrip(b"\x00"))
            i += 3
            start = i
        else:
            i += 1
    if start is not None and start < n:
        units.append(data[start:])
    return [u for u in units if u]


def codec_string(sps: bytes) -> str:
    """RFC 6381 `avc1.PPCCLL` from the SPS: profile_idc, constraint flags, level_idc."""
    return f"avc1.{sps[1]:02X}{sps[2]:02X}{sps[3]:02X}"


def init_segment(sps: bytes, pps: bytes, width: int, height: int) -> bytes:
    ftyp = box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isom", b"iso5", b"iso6", b"avc1", b"mp41")
    mvhd = full_box(b"mvhd", 0, 0, struct.pack(">IIIIIH10x", 0, 0, 1000, 0, 0x00010000, 0x0100), _MATRIX,
                    bytes(24), struct.pack(">I", 2))
    tkhd = full_box(b"tkhd", 0, 3, struct.pack(">IIIII8xhhhH", 0, 0, 1, 0, 0, 0, 0, 0, 0), _MATRIX,
                    struct.pack(">II", width << 16, height << 16))
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, TIMESCALE, 0, 0x55C4, 0))
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, b"vide"), b"streamer video\x00")
    vmhd = full_box(b"vmhd", 0, 1, bytes(8))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    avcc = box(b"avcC", struct.pack(">BBBBBB", 1, sps[1], sps[2], sps[3], 0xFF, 0xE1),
               struct.pack(">H", len(sps)), sps, struct.pack(">BH", 1, len(pps)), pps)
    avc1 = box(b"avc1", bytes(6), struct.pack(">H", 1), bytes(16), struct.pack(">HHIIIH", width, height,
               0x00480000, 0x00480000, 0, 1), bytes(32), struct.pack(">Hh", 0x0018, -1), avcc)
    stbl = box(b"stbl", full_box(b"stsd", 0, 0, struct.pack(">I", 1), avc1),
               full_box(b"stts", 0, 0, struct.pack(">I", 0)), full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
               full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)), full_box(b"stco", 0, 0, struct.pack(">I", 0)))
    minf = box(b"minf", vmhd, dinf, stbl)
    trak = box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))
    mvex = box(b"mvex", full_box(b"trex", 0, 0, struct.pack(">IIIII", 1, 1, 0, 0, 0)))
    return ftyp + box(b"moov", mvhd, trak, mvex)


def media_segment(sequence: int, decode_time: int, duration: int, sample: bytes, key: bool) -> bytes:
    """moof + mdat of one sample (length-prefixed NAL units)."""
    def moof(data_offset: int) -> bytes:
        trun = full_box(b"trun", 0, 0x000001 | 0x000100 | 0x000200 | 0x000400,
                        struct.pack(">Ii", 1, data_offset),
                        struct.pack(">III", duration, len(sample), SAMPLE_KEY if key else SAMPLE_DELTA))
        traf = box(b"traf", full_box(b"tfhd", 0, 0x020000, struct.pack(">I", 1)),
                   full_box(b"tfdt", 1, 0, struct.pack(">Q", decode_time)), trun)
        return box(b"moof", full_box(b"mfhd", 0, 0, struct.pack(">I", sequence)), traf)

    size = len(moof(0))
    return moof(size + 8) + box(b"mdat", sample)


class LiveH264:
    """One live encoder (one camera at one size), shared by every viewer of that stream."""

    def __init__(self, key_every_s: float = 1.0, preset: str = "veryfast", crf: int = 26, fps_guess: float = 15.0):
        self.key_every_s = key_every_s
        self.preset = preset
        self.crf = crf
        self.fps_guess = fps_guess
        self._codec = None
        self._size: Tuple[int, int] = (0, 0)
        self._want_key = True
        self._last_key: Optional[float] = None
        self._last_time: Optional[float] = None
        self._decode_time = 0
        self._last_duration = round(TIMESCALE / fps_guess)
        self._sequence = 0
        self._pts = 0
        self._init: Optional[bytes] = None
        self._codec_name: Optional[str] = None
        self._sps: Optional[bytes] = None
        self._pps: Optional[bytes] = None
        self._lock = threading.Lock()  # encode() runs in a pool thread; close() may come from another
        self.closed = False

    def want_key(self) -> None:
        """The next picture is a keyframe (a new viewer starts there)."""
        self._want_key = True

    def _open(self, width: int, height: int) -> None:
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height = width, height
        codec.pix_fmt = "yuv420p"
        codec.time_base = Fraction(1, TIMESCALE)
        codec.framerate = Fraction(30)  # only picks the level (live pictures carry their own times)
        codec.thread_count = 1
        codec.options = {
            "preset": self.preset, "tune": "zerolatency", "profile": "main", "crf": str(self.crf),
            "forced-idr": "1",
            "x264-params": "bframes=0:scenecut=0:keyint=10000:min-keyint=10000:repeat-headers=1:aud=0",
        }
        self._codec, self._size = codec, (width, height)
        self._want_key, self._init = True, None

    def encode(self, image: np.ndarray, wall_time: float) -> Optional[Piece]:
        """The picture (RGB) captured at `wall_time` (monotonic seconds) as one media segment;
        None when the encoder gave nothing back for it (or it was closed)."""
        with self._lock:
            if self.closed:
                return None
            return self._encode(image, wall_time)

    def _encode(self, image: np.ndarray, wall_time: float) -> Optional[Piece]:
        height, width = image.shape[0] & ~1, image.shape[1] & ~1
        if (width, height) != self._size:
            self._open(width, height)
        if image.shape[0] != height or image.shape[1] != width:
            image = image[:height, :width]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        if self._last_key is None or wall_time - self._last_key >= self.key_every_s:
            self._want_key = True
        if self._want_key:
            frame.pict_type = av.video.frame.PictureType.I
        frame.pts = self._pts
        self._pts += 1
        packets = self._codec.encode(frame)
        data = b"".join(bytes(p) for p in packets)
        if not data:
            return None
        units = nal_units(data)
        key = any(u[0] & 0x1F == NAL_IDR for u in units)
        for unit in units:
            kind = unit[0] & 0x1F
            if kind == NAL_SPS:
                self._sps = unit
            elif kind == NAL_PPS:
                self._pps = unit
        if key and self._sps and self._pps:
            self._init = init_segment(self._sps, self._pps, width, height)
            self._codec_name = codec_string(self._sps)
            self._want_key = False
            self._last_key = wall_time
        if self._init is None:
            return None  # nothing decodable yet: wait for a keyframe
        sample = b"".join(struct.pack(">I", len(u)) + u for u in units
                          if u[0] & 0x1F not in (NAL_SPS, NAL_PPS, NAL_AUD, NAL_SEI))
        if self._last_time is not None and wall_time > self._last_time:
            # this picture lasts until the next; unknown yet: as long as the previous gap
            self._last_duration = max(1, min(TIMESCALE, round((wall_time - self._last_time) * TIMESCALE)))
        self._last_time = wall_time
        self._sequence += 1
        fragment = media_segment(self._sequence, self._decode_time, self._last_duration, sample, key)
        self._decode_time += self._last_duration
        return Piece(fragment, key, self._init if key else None, self._codec_name if key else None, width, height)

    def close(self) -> None:
        """Free the encoder (libx264's buffers), after a picture being encoded now; later
        pictures give None."""
        with self._lock:
            self.closed = True
            self._codec, self._size = None, (0, 0)
