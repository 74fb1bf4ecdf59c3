"""Fragmented MP4: how a recording is written while it runs, trimmed after a kill, and finished.

While a run writes, the mp4 is fragmented (`FRAGMENTED`, FFmpeg's movflags): `ftyp` + an empty
`moov` first, then one `moof` + `mdat` pair per keyframe interval, each handed to the OS as soon as
the next keyframe reaches the muxer (`files.DurableFile`). A kill leaves every whole fragment
playable; at most a torn last fragment, which `scan` finds and `trim` cuts off. `frag_discont` and
`avoid_negative_ts=disabled` keep the absolute timestamps (the first fragment's decode time is the
first frame's, not 0): the audio/video offset and a resumed part's place on the timeline survive.

A clean end `join`s the fragmented part(s) into one regular mp4 with the `moov` first (+faststart):
a packet copy, no re-encoding. Chromium plays and seeks a finished fragmented file too (measured),
but the regular file is what every player and editor reads (a frame count and seek table in the
header), and what `run --out` always wrote; the copy costs a read and two writes of the file.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Dict, Iterator, List, Optional, Sequence, Tuple

import av

from .files import OutputFailed

FRAGMENTED = {
    "movflags": "+frag_keyframe+delay_moov+default_base_moof+frag_discont",
    "flush_packets": "1",  # the muxer hands a fragment over as soon as it is complete
    "avoid_negative_ts": "disabled",  # keep absolute timestamps (with frag_discont)
}
FASTSTART = {"movflags": "+faststart"}


def container_format(path: Path) -> str:
    return "mov" if Path(path).suffix.lower() == ".mov" else "mp4"


@dataclass(frozen=True)
class Fragment:
    """One `moof` + `mdat`: where it starts and ends in the file, and the video frames it holds."""

    start: int
    end: int
    frames: int


@dataclass
class Scan:
    """What a fragmented mp4 holds: its header's end, its whole fragments, where the whole part of
    the file ends (`whole_end`; a torn last fragment lies beyond it) and the file's size."""

    header_end: int = 0
    fragments: List[Fragment] = field(default_factory=list)
    whole_end: int = 0
    size: int = 0
    fragmented: bool = True  # False: a regular mp4 (its moov holds the samples)

    @property
    def frames(self) -> int:
        return sum(f.frames for f in self.fragments)

    @property
    def torn(self) -> int:
        """Bytes past the last whole piece (a kill inside a write)."""
        return self.size - self.whole_end

    def starts(self, first: int = 0) -> List[int]:
        """The frame number each fragment starts at (a keyframe), counting from `first`."""
        found, n = [], first
        for fragment in self.fragments:
            found.append(n)
            n += fragment.frames
        return found

    def offset_of(self, frame: int, first: int = 0) -> Optional[int]:
        """The byte offset of the fragment that starts at `frame` (None: no fragment starts there)."""
        for start, fragment in zip(self.starts(first), self.fragments):
            if start == frame:
                return fragment.start
        return None


def _headers(f: BinaryIO, start: int, end: int) -> Iterator[Tuple[bytes, int, int, int]]:
    """(kind, box start, header size, box size) of the boxes between `start` and `end`; stops at a
    box that runs past `end` (it is yielded, its size telling how far it would go)."""
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        head = f.read(16)
        size, kind = struct.unpack(">I4s", head[:8])
        header = 8
        if size == 1 and len(head) >= 16:
            size, header = struct.unpack(">Q", head[8:16])[0], 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind, pos, header, size
        pos += size


def _children(data: bytes) -> Iterator[Tuple[bytes, bytes]]:
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size < 8 or pos + size > len(data):
            return
        yield kind, data[pos + 8:pos + size]
        pos += size


def _video_track(moov: bytes) -> Optional[int]:
    """The track id of the moov's video track."""
    for kind, trak in _children(moov):
        if kind != b"trak":
            continue
        track_id, handler = None, None
        for sub, body in _children(trak):
            if sub == b"tkhd":
                track_id = struct.unpack(">I", body[12:16] if body[0] == 0 else body[20:24])[0]
            elif sub == b"mdia":
                for leaf, content in _children(body):
                    if leaf == b"hdlr":
                        handler = content[8:12]
        if handler == b"vide":
            return track_id
    return None


def _video_samples(moof: bytes, track: Optional[int]) -> int:
    samples = 0
    for kind, traf in _children(moof):
        if kind != b"traf":
            continue
        track_id, count = None, 0
        for sub, body in _children(traf):
            if sub == b"tfhd":
                track_id = struct.unpack(">I", body[4:8])[0]
            elif sub == b"trun":
                count += struct.unpack(">I", body[4:8])[0]
        if track is None or track_id == track:
            samples += count
    return samples


def scan(path: Path) -> Scan:
    """Walk a recording's top-level boxes (ValueError: not an mp4 with a header)."""
    path = Path(path)
    found = Scan(size=path.stat().st_size)
    track: Optional[int] = None
    moof: Optional[Tuple[int, int]] = None  # (start, frames) of a moof waiting for its mdat
    with open(path, "rb") as f:
        for kind, start, header, size in _headers(f, 0, found.size):
            end = start + size
            if end > found.size:
                break  # torn
            if kind == b"moov":
                f.seek(start + header)
                moov = f.read(size - header)
                track = _video_track(moov)
                found.fragmented = any(k == b"mvex" for k, _ in _children(moov))
                found.header_end = found.whole_end = end
            elif kind == b"moof":
                f.seek(start + header)
                moof = (start, _video_samples(f.read(size - header), track))
            elif kind == b"mdat" and moof is not None:
                found.fragments.append(Fragment(moof[0], end, moof[1]))
                found.whole_end, moof = end, None
            elif moof is None:
                found.whole_end = end  # ftyp, free, mfra, a regular file's mdat
    if not found.header_end:
        raise ValueError(f"{path.name} has no mp4 header (moov): nothing in it can be played")
    return found


def trim(path: Path, end: Optional[int] = None) -> Scan:
    """Cut a fragmented recording back to its whole fragments (or to `end`, a fragment's start).
    What was found before cutting."""
    found = scan(path)
    keep = found.whole_end if end is None else end
    if keep < found.size:
        os.truncate(path, keep)
    return found


def join(parts: Sequence[Path], target: Path, temp: Path) -> int:
    """Copy the packets of `parts` (fragmented mp4s of one recording, in order) into one regular
    mp4 with the moov first, written to `temp` and moved to `target`. Video frames written.

    Where parts overlap (a resumed part starts again at a keyframe the previous part had, and its
    audio restarts a little before), packets at or before what is already written are left out;
    a video frame never is (one with a repeated stamp moves one tick on). OutputFailed when the
    target cannot be written; the parts are left as they are."""
    target, temp = Path(target), Path(temp)
    frames = 0
    try:
        with av.open(str(temp), "w", format=container_format(target), options=FASTSTART) as out:
            streams: Dict[int, object] = {}
            last: Dict[int, int] = {}
            for n, part in enumerate(parts):
                with av.open(str(part)) as src:
                    if n == 0:
                        for stream in src.streams:
                            if stream.type in ("video", "audio"):
                                streams[stream.index] = out.add_stream_from_template(stream)
                    for packet in src.demux():
                        target_stream = streams.get(packet.stream.index)
                        if target_stream is None or packet.size == 0 or packet.dts is None:
                            continue
                        video = packet.stream.type == "video"
                        stamp = packet.dts * packet.time_base
                        previous = last.get(packet.stream.index)
                        if previous is not None and stamp <= previous:
                            if not video:
                                continue
                            packet.dts = int(previous / packet.time_base) + 1
                            packet.pts = max(packet.pts or packet.dts, packet.dts)
                            stamp = packet.dts * packet.time_base
                        last[packet.stream.index] = stamp
                        packet.stream = target_stream
                        out.mux(packet)
                        frames += video
        os.replace(temp, target)
    except (av.FFmpegError, OSError) as err:
        try:
            temp.unlink()
        except OSError:
            pass
        reason = getattr(err, "strerror", None) or str(err)
        raise OutputFailed(target, " ".join(str(reason).split()), Path(parts[-1]) if parts else None) from err
    return frames
