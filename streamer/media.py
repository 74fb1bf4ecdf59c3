"""What a video file is besides its pixels: orientation, pixel shape, colour, and its audio.

- Orientation: phones store portrait video as landscape pixels plus a display matrix.
  `Orientation.from_matrix` reads that matrix (as FFmpeg's own CLI does) and turns frames
  upright once, at the source; rotations that are not a multiple of 90 degrees, or shears,
  keep the stored pixels (with a warning).
- Colour: `ColourTags` are the range, matrix, primaries and transfer of the input; the output
  carries them. HDR (PQ or HLG transfer) is converted to SDR BT.709 by FFmpeg's swscale
  (its colour management tone-maps), for the model and the output alike.
- Audio: `plan_audio` decides, per audio stream, whether it is copied into the mp4 as it is
  (AAC, MP3, AC-3, E-AC-3, Opus) or transcoded to AAC; `AudioWriter` does it in the muxer.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import av
import numpy as np
from av.bitstream import BitStreamFilterContext
from av.video.reformatter import ColorPrimaries, ColorTrc, VideoReformatter

from .frames import AudioChunk

# -- orientation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Orientation:
    """How to turn the stored picture upright: a counter-clockwise rotation after optional flips."""

    rotation: int = 0  # counter-clockwise degrees applied after the flips: 0, 90, 180, 270
    hflip: bool = False
    vflip: bool = False

    @property
    def identity(self) -> bool:
        return not (self.rotation or self.hflip or self.vflip)

    @property
    def swaps_size(self) -> bool:
        return self.rotation in (90, 270)

    def apply(self, image: np.ndarray) -> np.ndarray:
        if self.identity:
            return image
        if self.hflip:
            image = image[:, ::-1]
        if self.vflip:
            image = image[::-1]
        return np.ascontiguousarray(np.rot90(image, k=self.rotation // 90))

    def size(self, width: int, height: int) -> Tuple[int, int]:
        return (height, width) if self.swaps_size else (width, height)

    def describe(self) -> str:
        parts = []
        if self.rotation:  # the display rotation the file carries (counter-clockwise, as PyAV reports it)
            parts.append(f"rotated {self.rotation}°")
        if self.hflip or self.vflip:
            parts.append("mirrored" if self.hflip != self.vflip else "flipped both ways")
        return " and ".join(parts) + " to upright" if parts else ""

    @classmethod
    def from_matrix(cls, raw: Optional[bytes]) -> Tuple["Orientation", Optional[str]]:
        """(orientation, warning) from a 36-byte display matrix (FFmpeg's int32 3x3, 16.16 fixed point).

        Follows FFmpeg's CLI: theta = clockwise display angle; transpose/flip filters by the
        matrix's signs. Anything but a multiple of 90 degrees (or a shear) keeps the stored pixels.
        """
        if not raw or len(raw) < 36:
            return cls(), None
        m = struct.unpack("<9i", bytes(raw[:36]))
        a, b, c, d = (v / 65536.0 for v in (m[0], m[1], m[3], m[4]))
        scale0, scale1 = math.hypot(a, c), math.hypot(b, d)
        if scale0 == 0 or scale1 == 0:
            return cls(), "the video's display matrix is degenerate; the stored pixels are kept as they are"
        ccw = -math.degrees(math.atan2(b / scale1, a / scale0))  # av_display_rotation_get()
        theta = -round(ccw)  # clockwise
        theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
        sheared = abs(a * b + c * d) > 1e-3 * scale0 * scale1 or abs(scale0 - scale1) > 1e-3 * scale0
        if sheared or min(abs(theta - k) for k in (0, 90, 180, 270, 360)) >= 1:
            return cls(), (f"the video asks to be shown rotated by {round(ccw) % 360}°"
                           f"{' and sheared' if sheared else ''}; only multiples of 90° are turned upright, "
                           "the stored pixels are kept as they are")
        if abs(theta - 90) < 1:  # transpose=cclock_flip (a plain transpose) or clock
            return (cls(90, hflip=True) if m[3] > 0 else cls(270)), None
        if abs(theta - 270) < 1:  # transpose=clock_flip or cclock
            return (cls(270, hflip=True) if m[3] < 0 else cls(90)), None
        if abs(theta - 180) < 1:
            hflip, vflip = m[0] < 0, m[4] < 0
            return (cls(180) if hflip and vflip else cls(0, hflip, vflip)), None
        return cls(0, vflip=m[4] < 0), None


def display_matrix(vframe: av.VideoFrame) -> Optional[bytes]:
    for data in vframe.side_data:
        if data.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            return bytes(data)
    return None


# -- colour ------------------------------------------------------------------------------------

_RANGE = {1: "tv", 2: "pc"}
_SPACE = {0: "gbr", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020nc",
          10: "bt2020c"}
_PRIMARIES = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020",
              11: "smpte431", 12: "smpte432"}
_TRC = {1: "bt709", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m", 8: "linear", 13: "iec61966-2-1",
        14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 18: "arib-std-b67"}
_HDR_TRC = {16: "PQ", 18: "HLG"}
_SWS_SPACES = (1, 4, 5, 6, 7, 9)  # AVColorSpace values that equal swscale's SWS_CS_* numbers


@dataclass(frozen=True)
class ColourTags:
    """FFmpeg's AVColorRange / AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic numbers."""

    range: int = 0
    space: int = 2
    primaries: int = 2
    trc: int = 2

    @classmethod
    def of(cls, obj) -> "ColourTags":
        return cls(int(obj.color_range), int(obj.colorspace), int(obj.color_primaries), int(obj.color_trc))

    @property
    def hdr(self) -> Optional[str]:
        return _HDR_TRC.get(self.trc)

    @property
    def full_range(self) -> bool:
        return self.range == 2

    def sws_space(self) -> Optional[int]:
        return self.space if self.space in _SWS_SPACES else None

    def describe(self) -> str:
        names = [_RANGE.get(self.range), _SPACE.get(self.space), _PRIMARIES.get(self.primaries),
                 _TRC.get(self.trc)]
        shown = [n for n in names if n]
        return "/".join(shown) if shown else "untagged"

    def apply_to(self, target) -> None:
        """Tag a codec context or frame."""
        target.color_range, target.colorspace = self.range, self.space
        target.color_primaries, target.color_trc = self.primaries, self.trc


SDR_BT709 = ColourTags(range=1, space=1, primaries=1, trc=1)


class PictureConverter:
    """Decoded frame -> upright RGB uint8; HDR frames tone-mapped to SDR BT.709 on the way.

    One swscale context is kept: setting up the tone-mapping tables takes about a second.
    """

    def __init__(self, orientation: Orientation, colour: ColourTags):
        self.orientation = orientation
        self.colour = colour
        self._sws = VideoReformatter()

    def rgb(self, vframe: av.VideoFrame) -> np.ndarray:
        if self.colour.hdr:
            vframe = self._sws.reformat(vframe, format="rgb24", dst_colorspace="itu709", dst_color_range="JPEG",
                                        dst_color_trc=ColorTrc.BT709, dst_color_primaries=ColorPrimaries.BT709)
            image = vframe.to_ndarray()
        else:
            image = self._sws.reformat(vframe, format="rgb24").to_ndarray()
        return self.orientation.apply(image)


@dataclass(frozen=True)
class PictureFormat:
    """What the output video must carry so it displays like the (upright) input."""

    sar: Optional[Fraction] = None  # None or 1: square pixels
    colour: ColourTags = ColourTags()

    @property
    def anamorphic(self) -> bool:
        return self.sar is not None and self.sar != 1


def picture_format(sar: Optional[Fraction], colour: ColourTags, orientation: Orientation) -> PictureFormat:
    if sar is not None and (sar <= 0 or sar == 1):
        sar = None
    if sar is not None and orientation.swaps_size:
        sar = 1 / sar
    return PictureFormat(sar=sar, colour=SDR_BT709 if colour.hdr else colour)


def probe_first_frame(container, video, audio_streams=(), broken=lambda index, why: None,
                      limit: int = 2000) -> Optional[av.VideoFrame]:
    """The first decodable frame of `video` (None: none decodes within `limit` packets).

    Each of `audio_streams` met on the way is decoded until it gives a frame; `broken(stream
    index, why)` is called for one whose packet fails to decode."""
    pending = {s.index for s in audio_streams}
    found = None
    try:
        for n, packet in enumerate(container.demux(video, *audio_streams)):
            if n >= limit:
                break
            index = packet.stream.index
            if index in pending:
                try:
                    if packet.decode():
                        pending.discard(index)
                except (av.FFmpegError, ValueError) as err:
                    pending.discard(index)
                    broken(index, f"cannot be decoded ({' '.join(str(err).split())})")
            elif index == video.index and found is None:
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    continue
                found = frames[0] if frames else None
            if found is not None and not pending:
                break
    except av.FFmpegError:
        pass
    return found


# -- audio -------------------------------------------------------------------------------------

COPY_CODECS = ("aac", "mp3", "ac3", "eac3", "opus")
_STANDARD_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 8: "7.1"}


@dataclass
class AudioTrack:
    """One input audio stream and how it reaches the mp4."""

    position: int  # index among the kept tracks
    stream: object  # the input av.AudioStream (template for a copy; decoder for a transcode)
    codec: str
    rate: int
    channels: int
    layout: str
    copy: bool
    broken: Optional[str] = None  # why the track was given up (set by whoever hits the problem)

    def describe(self) -> str:
        rate = f"{self.rate / 1000:g} kHz" if self.rate else "unknown rate"
        chans = {1: "mono", 2: "stereo"}.get(self.channels, self.layout or f"{self.channels} channels")
        how = "copied" if self.copy else "to aac"
        return f"{self.codec} {rate} {chans}, {how}"


def plan_audio(container, warn: Callable[[str], None]) -> List[AudioTrack]:
    tracks: List[AudioTrack] = []
    for stream in container.streams.audio:
        ctx = stream.codec_context
        codec = getattr(ctx, "codec", None)
        name = codec.canonical_name if codec is not None else None  # "mp3", not its decoder "mp3float"
        if not name or not ctx.sample_rate or not ctx.channels:
            warn(f"audio stream #{stream.index} cannot be decoded (codec {name or 'unknown'}); "
                 "the output has no sound from it")
            continue
        copy = name in COPY_CODECS
        # A transcode gets the standard layout for its channel count ("2 channels" -> stereo).
        layout = ctx.layout.name if copy else _STANDARD_LAYOUTS.get(ctx.channels, ctx.layout.name)
        tracks.append(AudioTrack(position=len(tracks), stream=stream, codec=name, rate=ctx.sample_rate,
                                 channels=ctx.channels, layout=layout, copy=copy))
    return tracks


def describe_audio(tracks: Sequence[AudioTrack], dropped: bool) -> str:
    if dropped:
        return "audio: dropped (--no-audio)"
    if not tracks:
        return "audio: none"
    return "audio: " + "; ".join(t.describe() for t in tracks)


def _check_aac(track: AudioTrack) -> None:
    encoder = av.CodecContext.create("aac", "w")
    encoder.sample_rate, encoder.layout, encoder.format = track.rate, track.layout, "fltp"
    encoder.time_base = Fraction(1, track.rate)
    encoder.open()


@dataclass
class _OutTrack:
    track: AudioTrack
    stream: object
    origin: int  # the output's time zero in the input stream's time base
    encoder_next: Optional[int] = None  # transcode: next sample pts
    adts: Optional[object] = None  # a copied AAC track: aac_adtstoasc (ADTS from MPEG-TS -> mp4's raw AAC)


class AudioWriter:
    """Muxes the audio chunks that travel with the frames into the output container.

    Chunks are held until the video has reached them (the muxer then interleaves with
    little buffering); whatever starts after the end of the last written video frame is
    cut, unless the input's audio ended with that frame (`finish(complete=True)`).
    A track whose packets cannot be written is given up with one warning; video goes on.
    """

    def __init__(self, container, tracks: Sequence[AudioTrack], origin: Fraction, warn: Callable[[str], None]):
        self._container = container
        self._warn = warn
        self._out: Dict[int, _OutTrack] = {}
        self._pending: List[AudioChunk] = []
        for track in tracks:
            if track.broken:
                continue
            try:
                if track.copy:
                    stream = container.add_stream_from_template(track.stream)
                else:
                    _check_aac(track)  # before the stream exists: a stream that cannot open breaks the file
                    stream = container.add_stream("aac", rate=track.rate, layout=track.layout)
            except (av.FFmpegError, ValueError, TypeError) as err:
                self._give_up(track, f"cannot be written to mp4 ({err})")
                continue
            tb = Fraction(track.stream.time_base) if track.copy else Fraction(1, track.rate)
            # A fragmented mp4 (written so that a kill keeps it) gets no automatic bitstream filters:
            # ADTS AAC (MPEG-TS) is turned into raw AAC here; raw AAC passes through unchanged.
            adts = BitStreamFilterContext("aac_adtstoasc", track.stream) if track.copy and track.codec == "aac" else None
            self._out[track.position] = _OutTrack(track, stream, round(origin / tb), adts=adts)

    @property
    def streams(self) -> int:
        return len(self._out)

    def _give_up(self, track: AudioTrack, why: str) -> None:
        track.broken = track.broken or why
        self._out.pop(track.position, None)
        self._warn(f"WARNING: audio stream #{track.stream.index} ({track.codec}) {why}; "
                   "the output goes on without it")

    def add(self, chunks: Sequence[AudioChunk]) -> None:
        self._pending.extend(c for c in chunks if c.track in self._out)

    def flush_until(self, end: Optional[Fraction]) -> None:
        """Mux held chunks that start before `end` (seconds, source clock; None: all of them)."""
        keep = []
        for chunk in self._pending:
            if end is not None and chunk.time >= end:
                keep.append(chunk)
            elif chunk.track in self._out:
                self._write(self._out[chunk.track], chunk.item)
        self._pending = keep

    def finish(self, end: Optional[Fraction]) -> None:
        self.flush_until(end)
        self._pending = []
        for out in list(self._out.values()):
            if not out.track.copy:
                self._encode(out, None)

    def _write(self, out: _OutTrack, item) -> None:
        if out.track.copy:
            if item.pts is not None:
                item.pts -= out.origin
            if item.dts is not None:
                item.dts -= out.origin
            if out.adts is not None:
                try:
                    packets = out.adts.filter(item)
                except (av.FFmpegError, ValueError) as err:
                    self._give_up(out.track, f"could not be written ({err})")
                    return
                for packet in packets:
                    packet.stream = out.stream
                self._mux(out, packets)
                return
            item.stream = out.stream
            self._mux(out, [item])
        else:
            pts = round(item.pts * item.time_base * out.track.rate) if item.pts is not None else out.encoder_next
            item.pts = (pts if pts is not None else 0) - out.origin
            item.time_base = Fraction(1, out.track.rate)
            out.encoder_next = (pts or 0) + item.samples
            self._encode(out, item)

    def _encode(self, out: _OutTrack, frame) -> None:
        try:
            packets = out.stream.encode(frame)
        except (av.FFmpegError, ValueError) as err:
            self._give_up(out.track, f"could not be transcoded to AAC ({err})")
            return
        self._mux(out, packets)

    def _mux(self, out: _OutTrack, packets) -> None:
        try:
            self._container.mux(packets)
        except (av.FFmpegError, ValueError) as err:
            self._give_up(out.track, f"could not be written ({err})")
