"""Where annotated frames go: an H.264 mp4 and/or a JSON-lines detections file.

Sinks are context managers. Both write to a temporary file beside the target and
move it into place when closed (also after Ctrl-C or an error), so a killed run
never leaves a half-written file under the requested name.

The mp4: libx264, yuv420p, moov atom first (+faststart: a browser starts playing at
once). Each frame keeps its source PTS, duration and time base, so frame rate, variable
frame rate and duration carry over exactly. No B-frames: with them the muxer derives
sample durations from reordered decode stamps and the last frames' durations drift.
yuv420p needs even sizes: an odd width or height is padded by one pixel, repeating
the last column/row. The input's sample aspect ratio and colour tags (range, matrix,
primaries, transfer) are carried (`PictureFormat`); the RGB->YUV conversion uses that
matrix and range. Audio tracks travel with the frames (Frame.audio) and are muxed just
before their frame; with an early stop they are cut at the end of the last written frame.
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import av
import numpy as np

from . import detlog
from .errors import SinkError
from .frames import Detections, Frame, frame_step
from .media import AudioTrack, AudioWriter, PictureFormat

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v")


def check_output_path(path: Path, overwrite: bool, inputs: Sequence[Path] = (), suffixes: Sequence[str] = ()) -> Path:
    """Fail early, with the fix, on an output that cannot or must not be written."""
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise SinkError(f"{path}: use one of the extensions {', '.join(suffixes)}")
    for source in inputs:
        same = path.resolve() == Path(source).resolve() or (
            path.exists() and Path(source).exists() and os.path.samefile(path, source))
        if same:
            raise SinkError(f"{path} is the input file; choose another output path")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise SinkError(f"cannot write {path}: folder {parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SinkError(f"cannot write {path}: folder {parent} is not writable")
    if path.is_dir():
        raise SinkError(f"{path} is a directory; give a file name")
    if path.exists() and not overwrite:
        raise SinkError(f"{path} exists; pass --overwrite to replace it")
    return path


def _temp_beside(path: Path) -> Path:
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


def even_size(width: int, height: int):
    return width + width % 2, height + height % 2


def pad_to_even(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class Mp4Sink:
    every_frame = True  # a video: every frame

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        time_base: Optional[Fraction],
        rate: Optional[Fraction],
        crf: int = 23,
        preset: str = "veryfast",
        picture: PictureFormat = PictureFormat(),
        audio: Sequence[AudioTrack] = (),
        origin: Optional[Fraction] = None,
        log: Callable[[str], None] = lambda message: None,
    ):
        """origin: the source time (seconds) that becomes the output's 0 (None: the first frame's)."""
        self.path = Path(path)
        self.width, self.height = even_size(width, height)
        self.rate = rate or Fraction(30, 1)
        self.time_base = time_base or 1 / self.rate
        self.crf = crf
        self.preset = preset
        self.written = 0
        self._tmp = _temp_beside(self.path)
        self._container = None
        self._stream = None
        self._first_pts: Optional[int] = None
        self._last_pts: Optional[int] = None
        self._durations: Dict[int, int] = {}  # pts -> duration of frames not yet muxed
        self.picture = picture
        self._audio_tracks = list(audio)
        self._origin = origin
        self._log = log
        self._audio: Optional[AudioWriter] = None
        self._end: Optional[Fraction] = None  # source time where the last written frame ends
        self._audio_complete = False
        self._discard = False

    @classmethod
    def for_file(cls, info, audio: Sequence[AudioTrack], path: Path,
                 log: Callable[[str], None] = lambda message: None) -> "Mp4Sink":
        """The output of a file (`info`: its sources.VideoInfo): upright size, the input's pixel shape,
        colour and timing, and the audio tracks that are not broken, at their offset to the video."""
        tracks = [t for t in audio if not t.broken]
        return cls(path, info.width, info.height, info.time_base, info.average_rate, picture=info.picture,
                   audio=tracks, origin=info.start if tracks else None, log=log)

    def __enter__(self) -> "Mp4Sink":
        try:
            self._container = av.open(
                str(self._tmp), mode="w", format="mp4" if self.path.suffix != ".mov" else "mov",
                options={"movflags": "+faststart"},
            )
        except (av.FFmpegError, OSError) as err:
            raise SinkError(f"cannot create {self.path} ({err})") from err
        stream = self._container.add_stream("libx264", rate=self.rate)
        stream.width, stream.height = self.width, self.height
        stream.pix_fmt = "yuv420p"
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        stream.options = {"crf": str(self.crf), "preset": self.preset, "bf": "0"}
        if self.picture.sar is not None:
            stream.codec_context.sample_aspect_ratio = self.picture.sar
        self.picture.colour.apply_to(stream.codec_context)
        self._stream = stream
        if self._audio_tracks:
            self._audio = AudioWriter(self._container, self._audio_tracks, self._origin or Fraction(0), self._log)
        return self

    def write(self, frame: Frame, image: np.ndarray, detections: Optional[Detections]) -> None:
        pts = frame.pts if frame.pts is not None else self.written
        if self._first_pts is None:
            self._first_pts = pts if self._origin is None else round(self._origin / self.time_base)
        source_pts = pts
        pts -= self._first_pts  # the output starts at 0 (or keeps its offset to the audio)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # repeated/out-of-order source stamps: keep every frame
        self._last_pts = pts
        colour = self.picture.colour
        vframe = av.VideoFrame.from_ndarray(pad_to_even(image), format="rgb24").reformat(
            format="yuv420p", dst_colorspace=colour.sws_space(),
            dst_color_range="JPEG" if colour.full_range else "MPEG")
        vframe.pts = pts
        vframe.time_base = self.time_base
        duration = frame.duration or frame_step(self.rate, self.time_base)
        self._durations[pts] = duration
        if self._audio is not None:
            self._audio.add(frame.audio)
            self._audio_complete = frame.audio_end
        self._mux(self._stream.encode(vframe))
        self.written += 1
        if self._audio is not None and frame.time_base is not None:
            self._end = (source_pts + duration) * frame.time_base
            self._audio.flush_until(None if frame.audio_end else self._end)

    def _mux(self, packets) -> None:
        for packet in packets:
            # libx264 gives the last packet 1/rate; the source's own duration is exact.
            if packet.pts is not None and packet.pts in self._durations:
                packet.duration = self._durations.pop(packet.pts)
        try:
            self._container.mux(packets)
        except (av.FFmpegError, OSError) as err:
            raise SinkError(f"writing {self.path} failed ({err})") from err

    def close(self) -> None:
        if self._container is None:
            return
        try:
            self._mux(self._stream.encode(None))  # flush the encoder's delayed frames
            if self._audio is not None:  # the rest of the audio, cut where the video ends
                self._audio.finish(None if self._audio_complete else self._end)
        finally:
            container, self._container = self._container, None
            container.close()
        if self.written and not self._discard:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def discard(self) -> None:
        """Leave no file behind when closed (the output turned out to be wrong)."""
        self._discard = True

    def __exit__(self, *exc) -> None:
        self.close()


class JsonlSink:
    """One JSON object per frame: index, pts, time (s), status, detections (name, label id, score, box),
    plus `extra` (a file run: time_base, size, threshold, classes; what `streamer render` needs).
    It keeps inferred frames only (live: one record per answer; a file run infers every frame)."""

    every_frame = False

    def __init__(self, path: Path, name_of: Callable[[int], str], extra: Optional[dict] = None):
        self.path = Path(path)
        self.name_of = name_of
        self.extra = dict(extra or {})
        self._tmp = _temp_beside(self.path)
        self._file = None
        self.written = 0

    def __enter__(self) -> "JsonlSink":
        try:
            self._file = open(self._tmp, "w", encoding="utf-8")
        except OSError as err:
            raise SinkError(f"cannot create {self.path} ({err.strerror})") from err
        return self

    def record(self, frame: Frame, detections: Optional[Detections]) -> dict:
        return detlog.encode(frame, detections, self.name_of, self.extra)

    def write(self, frame: Frame, image: np.ndarray, detections: Optional[Detections]) -> None:
        try:
            self._file.write(json.dumps(self.record(frame, detections)) + "\n")
        except OSError as err:
            raise SinkError(f"writing {self.path} failed ({err.strerror})") from err
        self.written += 1

    def close(self) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        os.replace(self._tmp, self.path)

    def __exit__(self, *exc) -> None:
        self.close()
