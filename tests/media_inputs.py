"""Real-world-like inputs for the media tests, written with PyAV: rotated phone clips, audio
tracks (AAC, PCM, A-law...), anamorphic pixels, colour tags, late-starting MPEG-TS, HDR."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import List, Optional, Sequence

import av
import numpy as np

from .helpers import frame_image


@dataclass
class Audio:
    codec: str = "aac"
    rate: int = 48000
    layout: str = "stereo"
    start: float = 0.0  # seconds
    seconds: Optional[float] = None  # default: as long as the video


def _tone(rate: int, channels: int, samples: int, offset: int) -> np.ndarray:
    t = (np.arange(samples) + offset) / rate
    return np.tile((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), (channels, 1))


def make_input(path: Path, count: int = 30, rate: int = 30, width: int = 200, height: int = 150,
               vcodec: str = "libx264", pix_fmt: str = "yuv420p", rotation: Optional[int] = None,
               sar: Optional[Fraction] = None, colour: Optional[Sequence[int]] = None,
               audio: Sequence[Audio] = (), format: Optional[str] = None, video_start: float = 0.0,
               vopts: Optional[dict] = None) -> Path:
    """An index-coded clip (tests.helpers.frame_image), with the asked properties and audio tracks.
    colour: (range, space, primaries, trc) as FFmpeg numbers."""
    with av.open(str(path), mode="w", format=format) as out:
        video = out.add_stream(vcodec, rate=rate)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        tb = Fraction(1, rate) if format != "mpegts" else Fraction(1, 90000)
        video.codec_context.time_base = Fraction(1, rate)
        if vopts:
            video.options = vopts
        if sar is not None:
            video.codec_context.sample_aspect_ratio = sar
        if colour is not None:
            ctx = video.codec_context
            ctx.color_range, ctx.colorspace, ctx.color_primaries, ctx.color_trc = colour
        if rotation is not None:
            video.set_display_rotation(rotation)
        tracks = []
        for spec in audio:
            stream = out.add_stream(spec.codec, rate=spec.rate, layout=spec.layout)
            tracks.append((spec, stream, []))
        for spec, stream, queue in tracks:
            size = stream.codec_context.frame_size or 1024
            total = round((spec.seconds if spec.seconds is not None else count / rate) * spec.rate)
            for start in range(0, total, size):
                n = min(size, total - start)
                frame = av.AudioFrame.from_ndarray(_tone(spec.rate, stream.codec_context.channels, n, start),
                                                   format="fltp", layout=spec.layout)
                frame.sample_rate = spec.rate
                frame.pts = start + round(spec.start * spec.rate)
                frame.time_base = Fraction(1, spec.rate)
                queue.append(frame)
        for i in range(count):
            image = frame_image(i, width, height)
            vframe = av.VideoFrame.from_ndarray(image, format="rgb24")
            if colour is not None:
                vframe = vframe.reformat(format=pix_fmt, dst_colorspace=colour[1] if colour[1] in (1, 5, 6, 9) else None,
                                         dst_color_range=colour[0] or None)
                vframe.color_range, vframe.colorspace, vframe.color_primaries, vframe.color_trc = colour
            vframe.pts = round((i / rate + video_start) / tb)
            vframe.time_base = tb
            out.mux(video.encode(vframe))
            for spec, stream, queue in tracks:  # interleave: audio up to this frame's end
                while queue and queue[0].pts / spec.rate <= (i + 1) / rate + video_start:
                    out.mux(stream.encode(queue.pop(0)))
        out.mux(video.encode(None))
        for spec, stream, queue in tracks:
            for frame in queue:
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
    return path


@dataclass
class Readback:
    width: int
    height: int
    rotation: int
    sar: Optional[Fraction]
    colour: tuple
    codes: List[int]
    images: List[np.ndarray]
    video_start: float  # first frame's time (s)
    audio: List[dict]  # per track: codec, rate, channels, start (s), seconds (decoded samples / rate)


def read_back(path: Path) -> Readback:
    from .helpers import read_code

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        ctx = video.codec_context
        sar = video.sample_aspect_ratio or ctx.sample_aspect_ratio
        frames = list(container.decode(video))
        first = frames[0]
        colour = (int(first.color_range), int(first.colorspace), int(first.color_primaries), int(first.color_trc))
        images = [f.to_ndarray(format="rgb24") for f in frames]
        readback = Readback(width=ctx.width, height=ctx.height, rotation=first.rotation,
                            sar=Fraction(sar) if sar else None, colour=colour,
                            codes=[read_code(img) for img in images], images=images,
                            video_start=float(first.pts * first.time_base), audio=[])
        audio_streams = len(container.streams.audio)
    for stream_index in range(audio_streams):
        with av.open(str(path)) as container:
            stream = container.streams.audio[stream_index]
            afs = list(container.decode(stream))
            readback.audio.append({
                "codec": stream.codec_context.codec.canonical_name, "rate": stream.codec_context.sample_rate,
                "channels": stream.codec_context.channels,
                "start": float(afs[0].pts * afs[0].time_base) if afs else None,
                "seconds": sum(f.samples for f in afs) / stream.codec_context.sample_rate,
                "frame": max((f.samples for f in afs), default=0) / stream.codec_context.sample_rate,
            })
    return readback
