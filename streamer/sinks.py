"""Where annotated frames go: an H.264 mp4 and/or a JSON-lines detections file.

Sinks are context managers. Both write to a partial file beside the target
(`.NAME.partial-RUNID.EXT`, see `recording.files`) and move it into place when closed (also
after Ctrl-C or an error), so a killed run never leaves a half-written file under the requested
name, and what it did write survives the kill:

- The mp4 is fragmented while it is written (a `moof` + `mdat` per keyframe interval, each handed
  to the OS as soon as it is complete: `recording.fragments`), with a keyframe every `KEY_EVERY_S`
  seconds of video (x264's GOP: `KEY_MAX_S` at most) and the encoder's look-ahead kept under
  `LOOKAHEAD_S`: a SIGKILL loses at most about 1.5 s of video. Closing it copies the packets into
  a regular mp4 with the moov atom first (+faststart: a browser starts playing at once).
- The detections log hands every record to the OS as it is written (`recording.lines`): a kill
  loses at most the record being written.

`streamer recover` turns what a kill left into finished files (docs/recording.md).

The mp4: libx264, yuv420p. Each frame keeps its source PTS, duration and time base, so frame rate,
variable frame rate and duration carry over exactly. No B-frames: with them the muxer derives
sample durations from reordered decode stamps and the last frames' durations drift.
yuv420p needs even sizes: an odd width or height is padded by one pixel, repeating
the last column/row. The input's sample aspect ratio and colour tags (range, matrix,
primaries, transfer) are carried (`PictureFormat`); the RGB->YUV conversion uses that
matrix and range. Audio tracks travel with the frames (Frame.audio) and are muxed just
before their frame; with an early stop they are cut at the end of the last written frame.
"""

from __future__ import annotations

import math
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
from .recording.files import DurableFile, OutputFailed, finishing_path, new_run_id, partial_path
from .recording.fragments import FRAGMENTED, container_format, join
from .recording.lines import JsonLines

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


KEY_EVERY_S = 1.0  # a keyframe (and a fragment on disk) at least this often, in seconds of video
KEY_MAX_S = 1.5  # x264's own limit (its GOP): frame counts of a variable frame rate can run ahead of time
LOOKAHEAD_S = 0.4  # at most this much video waits in the encoder's look-ahead (x264: 10 frames at most)


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
        partial: Optional[Path] = None,
        first_pts: Optional[int] = None,
        finish: bool = True,
    ):
        """origin: the source time (seconds) that becomes the output's 0 (None: the first frame's).
        partial: the file written meanwhile (default: a new partial name
        beside the target). first_pts: the source PTS that is the output's 0 (a resumed part goes on
        on the first part's clock; None: the first frame's, or `origin`). finish: close()
        moves the finished file into place (False: the fragmented partial stays, for whoever joins
        the parts)."""
        self.path = Path(path)
        self.width, self.height = even_size(width, height)
        self.rate = rate or Fraction(30, 1)
        self.time_base = time_base or 1 / self.rate
        self.crf = crf
        self.preset = preset
        self.written = 0
        self._tmp = Path(partial) if partial is not None else partial_path(self.path, new_run_id())
        self._file: Optional[DurableFile] = None
        self._container = None
        self._stream = None
        self._first_pts: Optional[int] = first_pts
        self._last_pts: Optional[int] = None
        self._key_time: Optional[Fraction] = None  # output time of the last keyframe asked for
        self._finish = finish
        self.failed: Optional[OutputFailed] = None
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
                 log: Callable[[str], None] = lambda message: None, **options) -> "Mp4Sink":
        """The output of a file (`info`: its sources.VideoInfo): upright size, the input's pixel shape,
        colour and timing, and the audio tracks that are not broken, at their offset to the video.
        `options`: the constructor's (a resumable run's part: partial, first_pts, last_pts, ...)."""
        tracks = [t for t in audio if not t.broken]
        return cls(path, info.width, info.height, info.time_base, info.average_rate, picture=info.picture,
                   audio=tracks, origin=info.start if tracks else None, log=log, **options)

    @property
    def partial(self) -> Path:
        """The fragmented file being written (it takes the target's name when finished)."""
        return self._tmp

    @property
    def first_pts(self) -> Optional[int]:
        """The source PTS that is the output's 0 (known after the first frame)."""
        return self._first_pts

    @property
    def bytes_written(self) -> int:
        """Bytes of whole fragments handed to the OS so far (0 until the first fragment is complete)."""
        return self._file.size if self._file is not None else 0

    def _encoder_options(self) -> Dict[str, str]:
        rate = float(self.rate)
        options = {"crf": str(self.crf), "preset": self.preset, "bf": "0", "forced-idr": "1",
                   "g": str(max(1, math.floor(KEY_MAX_S * rate)))}
        lookahead = int(LOOKAHEAD_S * rate)
        if lookahead < 10:  # slow frame rates: fewer frames wait in x264 (10 is the presets' most)
            options["rc-lookahead"] = str(lookahead)
        return options

    def __enter__(self) -> "Mp4Sink":
        self._file = DurableFile(self._tmp, self.path)
        try:
            self._container = av.open(self._file, mode="w", format=container_format(self.path), options=FRAGMENTED)
        except (av.FFmpegError, OSError) as err:
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            raise SinkError(f"cannot create {self.path} ({err})") from err
        stream = self._container.add_stream("libx264", rate=self.rate)
        stream.width, stream.height = self.width, self.height
        stream.pix_fmt = "yuv420p"
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        stream.options = self._encoder_options()
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
        if self._key_due(pts * self.time_base):
            vframe.pict_type = av.video.frame.PictureType.I
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

    def _key_due(self, time: Fraction) -> bool:
        """Whether the frame at output `time` (seconds) must be a keyframe: the first, and each
        KEY_EVERY_S seconds after the last one asked for (x264 adds its own at scene cuts). A rule of
        the timeline alone: a run, its `render` and a resumed part put them on the same frames."""
        due = self._key_time is None or time - self._key_time >= Fraction(KEY_EVERY_S)
        if due:
            self._key_time = time
        return due

    def _mux(self, packets) -> None:
        for packet in packets:
            # libx264 gives the last packet 1/rate; the source's own duration is exact.
            if packet.pts is not None and packet.pts in self._durations:
                packet.duration = self._durations.pop(packet.pts)
        if self.failed is not None:
            raise self.failed
        try:
            self._container.mux(packets)
            self._file.commit()  # a finished fragment goes to the OS now, in one write
        except OutputFailed as err:
            self.failed = err
            raise
        except (av.FFmpegError, OSError) as err:
            raise SinkError(f"writing {self.path} failed ({err})") from err

    def close(self) -> None:
        """Finish the file: flush the encoder and the audio, then (finish) copy the fragmented partial
        into the target with the moov first. After a write failed, the partial is left as it is
        (whole fragments only: it plays; `streamer recover` or `--resume` take it from there)."""
        if self._container is None:
            return
        container, file = self._container, self._file
        try:
            if self.failed is None:
                self._mux(self._stream.encode(None))  # flush the encoder's delayed frames
                if self._audio is not None:  # the rest of the audio, cut where the video ends
                    self._audio.finish(None if self._audio_complete else self._end)
                container.close()  # the last fragment and the index of fragments
                file.commit()
                file.sync()
        except OutputFailed as err:
            self.failed = self.failed or err
            raise
        finally:
            self._container = self._file = None
            if self.failed is not None:  # what the muxer still writes is dropped: the partial stays whole
                file.discard_pending()
                try:
                    container.close()
                except (av.FFmpegError, OSError):
                    pass
                file.discard_pending()
            file.close()
        if self._discard or not self.written:
            self._tmp.unlink(missing_ok=True)
        elif self._finish and self.failed is None:
            join([self._tmp], self.path, finishing_path(self._tmp))
            self._tmp.unlink(missing_ok=True)

    def discard(self) -> None:
        """Leave no file behind when closed (the output turned out to be wrong)."""
        self._discard = True

    def abandon(self) -> None:
        """Leave the fragmented partial in place when closed, unfinished (kept for `--resume`)."""
        self._finish = False

    def __exit__(self, *exc) -> None:
        self.close()


class JsonlSink:
    """One JSON object per frame: index, pts, time (s), status, detections (name, label id, score, box),
    plus `extra` (a file run: time_base, size, threshold, classes; what `streamer render` needs).
    It keeps inferred frames only (live: one record per answer; a file run infers every frame).
    Each record reaches the OS as it is written (`recording.lines.JsonLines`).

    partial, append: write (go on writing, for a resumed run) this partial file."""

    every_frame = False

    def __init__(self, path: Path, name_of: Callable[[int], str], extra: Optional[dict] = None,
                 partial: Optional[Path] = None, append: bool = False):
        self.path = Path(path)
        self.name_of = name_of
        self.extra = dict(extra or {})
        self._lines = JsonLines(self.path, partial=partial, append=append)
        self._finish = True
        self.written = 0

    @property
    def partial(self) -> Path:
        return self._lines.partial

    def __enter__(self) -> "JsonlSink":
        self._lines.open()
        return self

    def record(self, frame: Frame, detections: Optional[Detections]) -> dict:
        return detlog.encode(frame, detections, self.name_of, self.extra)

    def write(self, frame: Frame, image: np.ndarray, detections: Optional[Detections]) -> None:
        self._lines.write(self.record(frame, detections))
        self.written += 1

    def abandon(self) -> None:
        """Leave the partial in place when closed, unfinished (kept for `--resume`)."""
        self._finish = False

    def reopen(self) -> None:
        """Open the partial again, appending (after a failed write: the disk had no space, or the file
        or its folder was deleted, then a new one is made)."""
        self._lines.close(finish=False)
        self._lines.append = True
        self._lines.open()

    def close(self) -> None:
        self._lines.close(finish=self._finish)

    def __exit__(self, *exc) -> None:
        self.close()
