"""Video sources: what a source spec names, and the file source.

`classify_source` tells a file from a webcam and a network stream (live sources are
read by `streamer.capture`). Credentials in URLs never leave this module unmasked:
`mask_url` / `scrub` (from `streamer.masking`) turn `rtsp://user:p@ss@host/path?pwd=x` into
`rtsp://***@host/path?pwd=***`.

A video file (or file:// URL) is read with PyAV and decoded
losslessly: every frame, in presentation order, with its own PTS. Decode
errors do not stop the run: what decodes is yielded, and `problem` says what
went wrong (a truncated file, corrupt packets) so the run can exit non-zero.
"""

from __future__ import annotations

import os
import re
import time
import urllib.parse
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import av

from .states import SourceKind
from .errors import SourceError
from .masking import mask_url, scrub  # noqa: F401 (re-exported: the masking lives in streamer.masking)
from .frames import AudioChunk, Frame, frame_step
from .media import (ColourTags, Orientation, PictureConverter, PictureFormat, describe_audio, display_matrix,
                    picture_format, plan_audio, probe_first_frame)

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "srt", "udp", "tcp", "rtp")
_WEBCAM_PATH = re.compile(r"^/dev/video\d+$")


@dataclass(frozen=True)
class SourceSpec:
    """What the user asked to read. `target` may hold credentials: print `name` instead."""

    kind: SourceKind
    target: str  # file path, webcam index or device path, or URL
    name: str  # safe to show

    @property
    def live(self) -> bool:
        return self.kind is not SourceKind.FILE


def is_file_spec(spec: str) -> bool:
    """A plain path: not a webcam (0, /dev/video0) and not a URL."""
    text = spec.strip()
    return not (text.isdigit() or _WEBCAM_PATH.match(text) or _SCHEME.match(text))


def classify_source(spec: str) -> SourceSpec:
    """A webcam (`0`, `/dev/video0`), a network stream (rtsp://...), or a video file (checked)."""
    text = spec.strip()
    if text.isdigit() or _WEBCAM_PATH.match(text):
        return SourceSpec(SourceKind.WEBCAM, text, f"webcam {text}")
    match = _SCHEME.match(text)
    if match and match.group(1).lower() in NETWORK_SCHEMES:
        return SourceSpec(SourceKind.NETWORK, text, mask_url(text))
    path = parse_source(spec)
    return SourceSpec(SourceKind.FILE, str(path), str(path))


@dataclass(frozen=True)
class VideoInfo:
    name: str
    width: int  # of the upright picture (what the model, the drawing and the output see)
    height: int
    codec: str
    frame_count: Optional[int]  # as declared by the container (None: unknown)
    average_rate: Optional[Fraction]  # frames per second
    time_base: Optional[Fraction]
    duration: Optional[float]  # seconds
    orientation: Orientation = Orientation()
    colour: ColourTags = ColourTags()  # as stored in the input
    picture: PictureFormat = PictureFormat()  # what the output carries
    audio: str = ""  # the audio plan, said on the start line
    start: Optional[Fraction] = None  # seconds: the output's time zero (earliest kept stream start)

    def describe(self) -> str:
        fps = f"{float(self.average_rate):.3f} fps" if self.average_rate else "unknown fps"
        count = f"{self.frame_count} frames" if self.frame_count else "unknown length"
        parts = [f"{self.name}: {self.width}x{self.height} {self.codec}", fps, count]
        if not self.orientation.identity:
            parts.append(self.orientation.describe())
        if self.picture.anamorphic:
            parts.append(f"SAR {self.picture.sar.numerator}:{self.picture.sar.denominator}")
        if self.colour.hdr:
            parts.append(f"{self.colour.hdr} HDR ({self.colour.describe()}) tone-mapped to SDR BT.709")
        elif self.colour != ColourTags():
            parts.append(f"colour {self.colour.describe()}")
        if self.audio:
            parts.append(self.audio)
        return ", ".join(parts)


def parse_source(spec: str) -> Path:
    """A file path or file:// URL -> the path of a readable local video file."""
    match = _SCHEME.match(spec)
    if match:
        scheme = match.group(1).lower()
        if scheme != "file":
            raise SourceError(
                f"unsupported source scheme '{scheme}://' in {mask_url(spec)}: give a video file (a path or "
                f"file:///path), a webcam (0, /dev/video0) or a stream URL ({', '.join(NETWORK_SCHEMES)})"
            )
        spec = urllib.parse.unquote(urllib.parse.urlparse(spec).path)
    path = Path(spec)
    if not path.exists():
        raise SourceError(f"no such file: {path}")
    if path.is_dir():
        raise SourceError(f"{path} is a directory, not a video file")
    if not os.access(path, os.R_OK):
        raise SourceError(f"{path} is not readable (permissions)")
    if path.stat().st_size == 0:
        raise SourceError(f"{path} is empty (0 bytes); was it fully copied or recorded?")
    return path


class FileSource:
    """`with FileSource(path) as src: for frame in src.frames(): ...`

    Frames come out upright (display rotation applied), in SDR (HDR tone-mapped), RGB.
    With `audio`, each frame carries the audio demuxed since the previous one (see Frame.audio);
    an audio stream that cannot be decoded is given up with a warning (`log`), never a frame.
    """

    def __init__(self, path: Path, audio: bool = True, log: Callable[[str], None] = lambda message: None):
        self.path = Path(path)
        self.keep_audio = audio
        self.log = log
        self.container = None
        self.stream = None
        self.info: Optional[VideoInfo] = None
        self.audio_tracks: List = []
        self.decoded = 0
        self.decode_errors = 0
        self.problem: Optional[str] = None
        self._picture: Optional[PictureConverter] = None

    def __enter__(self) -> "FileSource":
        try:
            self.container = av.open(str(self.path), mode="r")
        except av.FFmpegError as err:
            raise SourceError(
                f"{self.path} is not a video PyAV can read ({ffmpeg_reason(err)}); "
                "a truncated mp4 without its index (moov atom) cannot be opened either"
            ) from err
        streams = self.container.streams.video
        if not streams:
            self.container.close()
            raise SourceError(f"{self.path} has no video stream")
        self.stream = streams[0]
        ctx = self.stream.codec_context
        if not ctx.width or not ctx.height:
            self.container.close()
            raise SourceError(f"{self.path}: the video stream has no picture size (unsupported or corrupt)")
        duration = None
        if self.stream.duration is not None and self.stream.time_base is not None:
            duration = float(self.stream.duration * self.stream.time_base)
        elif self.container.duration is not None:
            duration = self.container.duration / av.time_base
        self.audio_tracks = plan_audio(self.container, self._warn) if self.keep_audio else []
        orientation, colour = self._probe()
        sar = self.stream.sample_aspect_ratio or ctx.sample_aspect_ratio
        self._picture = PictureConverter(orientation, colour)
        width, height = orientation.size(ctx.width, ctx.height)
        self.info = VideoInfo(
            name=self.path.name,
            width=width,
            height=height,
            codec=ctx.name,
            frame_count=self.stream.frames or None,
            average_rate=Fraction(self.stream.average_rate) if self.stream.average_rate else None,
            time_base=Fraction(self.stream.time_base) if self.stream.time_base else None,
            duration=duration,
            orientation=orientation,
            colour=colour,
            picture=picture_format(Fraction(sar) if sar else None, colour, orientation),
            audio=describe_audio([t for t in self.audio_tracks if not t.broken],
                                 dropped=not self.keep_audio and bool(self.container.streams.audio)),
            start=self._start(),
        )
        return self

    def _probe(self):
        """Orientation and colour from the first decodable frame, and a first decode of each
        transcoded audio track (read through a second handle, so the run starts at the top)."""
        try:
            with av.open(str(self.path), mode="r") as probe:
                video = probe.streams.video[0]
                transcoded = {t.stream.index: t for t in self.audio_tracks if not t.copy}
                vframe = probe_first_frame(probe, video, [probe.streams[i] for i in transcoded],
                                           lambda index, why: self._give_up(transcoded[index], why))
        except av.FFmpegError:
            return Orientation(), ColourTags.of(self.stream.codec_context)
        if vframe is None:
            return Orientation(), ColourTags.of(self.stream.codec_context)
        orientation, warning = Orientation.from_matrix(display_matrix(vframe))
        if warning:
            self._warn(f"WARNING: {self.path.name}: {warning}")
        return orientation, ColourTags.of(vframe)

    def _give_up(self, track, why: str) -> None:
        track.broken = why
        self._warn(f"WARNING: audio stream #{track.stream.index} ({track.codec}) {why}; "
                   "the output goes on without it")

    def _start(self) -> Optional[Fraction]:
        """Earliest start among the video and the kept audio streams (seconds), or None."""
        starts = []
        for stream in [self.stream] + [t.stream for t in self.audio_tracks]:
            if stream.start_time is not None and stream.time_base is not None:
                starts.append(stream.start_time * Fraction(stream.time_base))
        return min(starts) if starts else None

    def _warn(self, message: str) -> None:
        self.log(message)

    def __exit__(self, *exc) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None

    def frames(self) -> Iterator[Frame]:
        """Every frame, upright, in order. A frame is handed out once the next one is decoded,
        carrying the audio demuxed until then; the last one carries the rest (audio_end)."""
        assert self.container is not None and self.info is not None, "use inside `with`"
        last_pts: Optional[int] = None
        step = frame_step(self.info.average_rate, self.info.time_base)
        tracks = {t.stream.index: t for t in self.audio_tracks}
        packets = self.container.demux(self.stream, *(t.stream for t in self.audio_tracks))
        held: Optional[Frame] = None
        audio: List[AudioChunk] = []
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.FFmpegError as err:  # the container itself breaks off (truncated file)
                self._note(f"reading stopped at frame {self.decoded} ({ffmpeg_reason(err)})")
                break
            if packet.stream.index in tracks:
                audio.extend(self._audio(tracks[packet.stream.index], packet))
                continue
            try:
                decoded = packet.decode()
            except av.FFmpegError as err:  # one corrupt packet: skip it, go on
                if not self.decode_errors:
                    first_error = f"near frame {self.decoded}: {ffmpeg_reason(err)}"
                self.decode_errors += 1
                continue
            for vframe in decoded:
                pts = vframe.pts
                if pts is None:  # no timestamp: continue the last one at the nominal rate
                    pts = 0 if last_pts is None else last_pts + step
                last_pts = pts
                if held is not None:
                    yield replace(held, audio=tuple(audio))
                    audio = []
                held = Frame(
                    index=self.decoded,
                    pts=pts,
                    time_base=self.info.time_base,
                    wall_time=time.monotonic(),
                    image=self._picture.rgb(vframe),
                    duration=vframe.duration or None,
                )
                self.decoded += 1
        if held is not None:
            yield replace(held, audio=tuple(audio), audio_end=True)
        if self.decode_errors:
            self._note(f"{self.decode_errors} corrupt packet(s) skipped (first {first_error})")
        declared = self.info.frame_count
        if declared and self.decoded < declared:
            self._note(f"the input ended early: decoded {self.decoded} of {declared} frames (truncated file?)")
        elif self.decoded == 0:
            self._note("no frame could be decoded")

    def _audio(self, track, packet) -> List[AudioChunk]:
        """A copied track's packet as it is; a transcoded track's packet decoded (in this thread)."""
        if track.broken:
            return []
        if track.copy:
            stamp = packet.pts if packet.pts is not None else packet.dts
            if packet.size == 0 or stamp is None:
                return []
            return [AudioChunk(track.position, packet, stamp * Fraction(packet.time_base))]
        try:
            frames = packet.decode()
        except (av.FFmpegError, ValueError) as err:
            self._give_up(track, f"cannot be decoded ({ffmpeg_reason(err)})")
            return []
        return [AudioChunk(track.position, f, f.pts * Fraction(f.time_base)) for f in frames if f.pts is not None]

    def _note(self, message: str) -> None:
        self.problem = message if self.problem is None else f"{self.problem}; {message}"


def ffmpeg_reason(err: Exception) -> str:
    """PyAV's error message on one line, without the file name or URL it appends."""
    text = getattr(err, "strerror", None) or str(err)
    return " ".join(str(text).split())
