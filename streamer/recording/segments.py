"""A live camera's recording: one file, or segments with an index and retention.

`LiveRecorder` is the sink of a camera's recording (every frame, drawn). It opens its mp4 at the
first frame's size (later frames of another size, a camera that came back in another mode, are
scaled to it) and writes it as `sinks.Mp4Sink` does: fragmented while running, so a kill loses at
most about 1.5 s.

- **One file** (`run rtsp://... --out rec.mp4`): finished (moov first) when the run ends.
- **Segments** (`--segment SECONDS`; `segment:` in a camera file; on by default for `watch
  --out-dir`): the target is the camera's folder and each segment a complete mp4 named by the local
  time of its first frame, `FOLDER/YYYY-MM-DD/HH-MM-SS.mp4` (`-2`, `-3` when a name is taken: the
  hour that repeats when clocks go back). A segment ends at the next multiple of SECONDS of the
  clock (10 s segments start at :00, :10, ... after the first), and when the camera's frames
  stop for longer than `gap_s` (a camera offline: a gap, then a new segment). Each starts with a
  keyframe (its own encoder), no frame is in two segments or in none. A closed segment is
  finished on a background thread (the video never waits for it), then listed in
  `FOLDER/index.jsonl` (one JSON object per segment: file, start and end as local time with the
  UTC offset and as Unix time, frames, bytes, the gap before it), then the retention rule runs.
- **Retention** (`--retain 7d`, `--retain 50GB`, `--retain 7d,50GB`): the oldest finished segments
  past the age or beyond the total size are deleted, with their index lines; the segment being
  written never is.
- **When the disk fills or the folder goes away** the recording says so (`status()`: the HUD,
  the status line, `/api/state`, the run report) and the camera goes on being shown and
  inferred. Segments try again every `RETRY_S` seconds with a new segment (and run the
  retention rule first, which may free the space); one file stops for the rest of the run. What
  was written stays whole and playable. The camera's folder is made again if it is removed; the
  folder above it (yours: an `--out-dir`, a mounted disk) never is.
- Partial segments left by a killed run (`.HH-MM-SS.partial-RUNID.mp4`) are finished and listed
  when the camera's recording starts again, or by `streamer recover FOLDER`.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import cv2
import numpy as np

from ..errors import SinkError
from ..frames import Detections, Frame
from ..stages import RecordingStatus
from ..states import RecordingState
from .files import OutputFailed, finishing_path, is_locked, partials_in, reason_of
from .fragments import join, trim
from .lines import JsonLines, read_json_lines, trim_torn_tail
from .retention import Retention

INDEX = "index.jsonl"
GAP_MIN_S = 2.0  # frames further apart than this (or 4 frame intervals) end a segment: a gap
RETRY_S = 5.0  # a segmented recording that failed tries again this often
PENDING = 4  # closed segments waiting to be finished, at most (then the next close waits)
DEFAULT_SEGMENT_S = 60.0  # `watch --out-dir` records in segments of this length

Say = Callable[[str], None]


# -- retention ----------------------------------------------------------------------------------

def apply_retention(folder: Path, retain: Retention, now: float) -> List[str]:
    """Delete the oldest finished segments of `folder` past the limits, with their index lines
    (the segment being written is not in the index yet). The files deleted (relative names)."""
    index = SegmentIndex(folder)
    entries = sorted(index.entries(), key=lambda e: e.get("start_unix") or 0)
    total = sum(int(e.get("bytes") or 0) for e in entries)
    deleted = []
    while entries:
        oldest = entries[0]
        too_old = retain.max_age_s is not None and now - float(oldest.get("end_unix") or 0) > retain.max_age_s
        too_big = retain.max_bytes is not None and total > retain.max_bytes
        if not (too_old or too_big):
            break
        entries.pop(0)
        total -= int(oldest.get("bytes") or 0)
        path = folder / str(oldest["file"])
        path.unlink(missing_ok=True)
        deleted.append(str(oldest["file"]))
        try:
            path.parent.rmdir()  # a day's folder once its last segment is gone
        except OSError:
            pass
    if deleted:
        index.rewrite(entries)
    return deleted


# -- the index ----------------------------------------------------------------------------------

class SegmentIndex:
    """`FOLDER/index.jsonl`: one record per finished segment, in the order they were finished."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / INDEX
        self._checked = False

    def entries(self) -> List[dict]:
        try:
            return read_json_lines(self.path).records
        except OSError:
            return []

    def append(self, record: dict) -> None:
        if not self._checked and self.path.exists():
            trim_torn_tail(self.path)  # a kill inside the last append: go on after the whole lines
        self._checked = True
        with JsonLines(self.path, partial=self.path, append=True) as lines:
            lines.write(record)

    def rewrite(self, entries: List[dict]) -> None:
        temp = finishing_path(self.path)
        with JsonLines(self.path, partial=temp) as lines:
            for entry in entries:
                lines.write(entry)


def local_time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch).astimezone()


def segment_record(name: str, start: float, end: float, frames: int, size: int, first_frame: Optional[int],
                   gap_before: Optional[float], recovered: bool = False) -> dict:
    """One index line (times: local with the UTC offset, and Unix seconds)."""
    return {"file": name, "start": local_time(start).isoformat(timespec="milliseconds"),
            "end": local_time(end).isoformat(timespec="milliseconds"), "start_unix": round(start, 3),
            "end_unix": round(end, 3), "frames": frames, "bytes": size, "first_frame": first_frame,
            "gap_before_s": None if gap_before is None else round(gap_before, 3), "recovered": recovered}


def check_segment_folder(path: Path) -> Path:
    """A camera's segment folder can be made (its parent exists and is writable) and is no file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SinkError(f"{path} is a file; with segments the recording is a folder (give a folder name)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise SinkError(f"cannot record into {path}: folder {parent} does not exist (create it first)")
    return path


# -- recovering what a kill left ------------------------------------------------------------------

def finish_partial(partial: Path, target: Path) -> Tuple[int, int]:
    """A fragmented partial cut back to its whole fragments and copied into `target` (moov first);
    the partial is removed. (frames, bytes) of the finished file; OutputFailed when it cannot be
    written, ValueError when nothing in it can be played."""
    found = trim(partial)
    if not found.frames:
        raise ValueError(f"{Path(partial).name} holds no whole frame")
    frames = join([partial], target, finishing_path(partial))
    Path(partial).unlink(missing_ok=True)
    return frames, Path(target).stat().st_size


def _free_name(path: Path) -> Path:
    """`path`, or `NAME-2.mp4`, `NAME-3.mp4`, ... when it (or one being written) is taken."""
    candidate, n = path, 1
    while candidate.exists() or any(p.target == candidate for p in partials_in(candidate.parent)):
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def _media_seconds(path: Path) -> float:
    import av

    try:
        with av.open(str(path)) as container:
            return (container.duration or 0) / av.time_base
    except av.FFmpegError:
        return 0.0


def _start_of(day: Path, name: str, fallback: float) -> float:
    """A segment's start (Unix time) from its folder and name (local time), to the second."""
    try:
        return datetime.strptime(f"{day.name} {name[:8]}", "%Y-%m-%d %H-%M-%S").timestamp()
    except ValueError:
        return fallback


def _frames(path: Path) -> int:
    import av

    try:
        with av.open(str(path)) as container:
            return container.streams.video[0].frames
    except (av.FFmpegError, IndexError):
        return 0


def recover_segments(folder: Path, log: Say) -> List[str]:
    """Finish the partial segments a killed run left in `folder` (not one a running streamer still
    writes) and list them in its index, with any finished segment a kill kept out of it (killed
    between finishing the file and listing it). The files listed (relative names)."""
    folder = Path(folder)
    index = SegmentIndex(folder)
    done = []
    days = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    listed = {e.get("file") for e in index.entries()}
    for day in days:
        for path in sorted(day.glob("[!.]*.mp4")):
            name = str(path.relative_to(folder))
            if name not in listed and path.is_file():
                start = _start_of(day, path.stem, path.stat().st_mtime)
                index.append(segment_record(name, start, start + _media_seconds(path), _frames(path),
                                            path.stat().st_size, None, None, recovered=True))
                done.append(name)
    for day in days:
        for partial in sorted(partials_in(day), key=lambda p: p.path.name):
            if partial.path.suffix != ".mp4" or is_locked(partial.path):
                continue
            target = _free_name(partial.target)
            start = _start_of(day, target.stem, partial.path.stat().st_mtime)
            try:
                frames, size = finish_partial(partial.path, target)
            except ValueError as err:
                log(f"note: {partial.path}: {err}; removed")
                partial.path.unlink(missing_ok=True)
                continue
            except SinkError as err:
                log(f"WARNING: {partial.path} could not be finished ({err}); it is kept")
                continue
            name = str(target.relative_to(folder))
            end = start + _media_seconds(target)
            index.append(segment_record(name, start, end, frames, size, None, None, recovered=True))
            log(f"recovered {folder / name} ({frames} frames) from a run that was killed")
            done.append(name)
    return done


# -- the recorder --------------------------------------------------------------------------------

@dataclass
class _Segment:
    sink: object  # sinks.Mp4Sink
    name: str  # relative to the folder (or the file's name)
    start: float  # Unix time of the first frame
    end: float  # the segment ends at this Unix time
    last: float = 0.0  # Unix time of the latest frame
    frames: int = 0
    first_frame: Optional[int] = None
    gap_before: Optional[float] = None


class LiveRecorder:
    """A camera's recording (a `Sink` that takes every frame): see the module docstring.

    target: the file (segment_s None) or the camera's segment folder; rate: the camera's nominal
    frame rate (None: unknown); time_base: the frames' PTS unit; camera: its name in messages;
    clock: Unix time now (tests move it); retry_s: seconds between tries after a failure."""

    every_frame = True

    def __init__(self, target: Path, rate: Optional[Fraction], time_base: Fraction, segment_s: Optional[float] = None,
                 retain: Optional[Retention] = None, camera: str = "", log: Say = lambda message: None,
                 clock: Callable[[], float] = time.time, retry_s: float = RETRY_S):
        self.target = Path(target)
        self.rate = rate
        self.time_base = time_base
        self.segment_s = segment_s
        self.retain = retain
        self.camera = camera
        self.log = log
        self.clock = clock
        self.retry_s = retry_s
        self.size: Optional[Tuple[int, int]] = None
        self.state = RecordingState.RECORDING
        self.reason: Optional[str] = None
        self.last_failure: Optional[str] = None
        self.files = 0
        self.not_recorded = 0
        self.unfinished: List[Path] = []  # partials that could not be finished (kept whole)
        self._segment: Optional[_Segment] = None
        self._offset = clock() - time.monotonic()
        self._retry_at = 0.0
        self._gap = max(GAP_MIN_S, 4 / float(rate)) if rate else GAP_MIN_S
        self._gap_before: Optional[float] = None
        self._jobs: "queue.Queue" = queue.Queue(maxsize=PENDING)
        self._finisher: Optional[threading.Thread] = None
        self._lock = threading.Lock()  # files, unfinished: also changed by the finisher

    @property
    def segmented(self) -> bool:
        return self.segment_s is not None

    def status(self) -> RecordingStatus:
        current = None
        if self._segment is not None:
            current = str(self.target / self._segment.name) if self.segmented else str(self.target)
        with self._lock:
            return RecordingStatus(self.state, self.reason, self.files, self.not_recorded, current, self.last_failure)

    # -- the Sink interface ----------------------------------------------------------------------
    def __enter__(self) -> "LiveRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self, frame: Frame, image: np.ndarray, detections: Optional[Detections]) -> None:
        epoch = frame.wall_time + self._offset
        seg = self._segment
        if seg is not None and self.segmented:
            gap = epoch - seg.last > self._gap
            if gap or epoch >= seg.end:
                self._gap_before = epoch - seg.last if gap else None
                self._close(seg)
                seg = None
                self._retry_at = 0.0  # a file opened by a retry ended whole: the next one opens now
        if seg is None:
            seg = self._open(frame, image, epoch)
            if seg is None:
                self.not_recorded += 1
                return
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        try:
            seg.sink.write(frame, image, detections)
        except SinkError as err:
            self._lost(seg, err)
            self.not_recorded += 1
            return
        seg.frames += 1
        seg.last = epoch
        if self.state is not RecordingState.RECORDING and seg.sink.bytes_written:
            self.state, self.reason = RecordingState.RECORDING, None
            self.log(f"camera {self.camera}: recording again ({self.target / seg.name if self.segmented else self.target})")

    def close(self) -> None:
        """Finish the file being written; wait for the segments being finished."""
        seg, self._segment = self._segment, None
        if seg is not None:
            if self.segmented:
                self._close(seg)
            else:
                self._finish(seg)
        if self._finisher is not None:
            self._jobs.put(None)
            self._finisher.join()
            self._finisher = None
        if self.unfinished and not self.segmented:  # one file: finish what was written before the failure
            try:
                finish_partial(self.unfinished[0], self.target)
                self.unfinished.clear()
            except (SinkError, ValueError):
                pass
        if self.unfinished:
            self.log(f"WARNING: camera {self.camera}: {len(self.unfinished)} recording(s) could not be finished and "
                     f"are kept as partial files (whole up to their last second): `streamer recover {self.target}`")

    # -- inside ---------------------------------------------------------------------------------
    def _open(self, frame: Frame, image: np.ndarray, epoch: float) -> Optional[_Segment]:
        """A new file for this frame; None when it cannot be made now (the state says why)."""
        from ..sinks import Mp4Sink

        if self.state is RecordingState.STOPPED:
            return None
        if self.state is RecordingState.RETRYING:
            if time.monotonic() < self._retry_at:
                return None
            self._retry_at = time.monotonic() + self.retry_s
            if self.retain is not None:
                self._submit(("retain",))  # old segments go first: that may be the space needed
        if self.size is None:
            self.size = (image.shape[1], image.shape[0])
        self._offset = self.clock() - time.monotonic()  # follow the wall clock from segment to segment
        epoch = frame.wall_time + self._offset
        try:
            path, name = self._path_for(epoch)
            sink = Mp4Sink(path, self.size[0], self.size[1], self.time_base, self.rate, log=self.log)
            sink.__enter__()
        except (SinkError, OSError) as err:
            self._failed(err if isinstance(err, SinkError) else OutputFailed(self.target, reason_of(err)))
            return None
        end = (math.floor(epoch / self.segment_s) + 1) * self.segment_s if self.segmented else math.inf
        self._segment = _Segment(sink, name, epoch, end, epoch, first_frame=frame.index, gap_before=self._gap_before)
        self._gap_before = None
        return self._segment

    def _path_for(self, epoch: float) -> Tuple[Path, str]:
        if not self.segmented:
            return self.target, self.target.name
        if not self.target.parent.is_dir():
            raise OutputFailed(self.target, f"folder {self.target.parent} does not exist (is the disk mounted?)")
        self.target.mkdir(exist_ok=True)
        if self._finisher is None:
            self._finisher = threading.Thread(target=self._finish_loop, name=f"recording-{self.camera}", daemon=True)
            self._finisher.start()
            self._submit(("recover",))  # what a killed run left here
        when = local_time(epoch)
        day = self.target / when.strftime("%Y-%m-%d")
        day.mkdir(exist_ok=True)
        path = _free_name(day / f"{when.strftime('%H-%M-%S')}.mp4")
        return path, str(path.relative_to(self.target))

    def _failed(self, err: SinkError) -> None:
        """Recording cannot go on now: say it once, and when to try again."""
        reason = err.reason if isinstance(err, OutputFailed) else str(err)
        was = self.state
        with self._lock:
            self.reason = self.last_failure = f"{reason} ({err.target})" if isinstance(err, OutputFailed) else reason
            self.state = RecordingState.RETRYING if self.segmented else RecordingState.STOPPED
        self._retry_at = time.monotonic() + self.retry_s
        if was is RecordingState.RECORDING:
            then = f"trying again every {self.retry_s:g} s" if self.segmented else "the rest of this run is not recorded"
            self.log(f"WARNING: camera {self.camera}: recording stopped: {err}; {then} (the video goes on)")

    def _lost(self, seg: _Segment, err: SinkError) -> None:
        """A write failed: close that file as it is (whole fragments stay), then _failed."""
        self._segment = None
        try:
            seg.sink.close()
        except SinkError:
            pass
        if seg.sink.bytes_written and seg.sink.partial.exists():
            with self._lock:
                self.unfinished.append(seg.sink.partial)
        else:
            seg.sink.partial.unlink(missing_ok=True)  # nothing whole was written
        self._failed(err)

    def _close(self, seg: _Segment) -> None:
        """Hand a segment to the finisher (it waits when PENDING segments already wait)."""
        self._segment = None
        self._submit(("segment", seg))

    def _submit(self, job: tuple) -> None:
        if self._finisher is None:
            self._run(job)
        else:
            self._jobs.put(job)

    def _finish_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._run(job)
            except Exception as err:  # a finisher that dies would stop every later segment
                self.log(f"WARNING: camera {self.camera}: recording housekeeping failed ({type(err).__name__}: {err})")

    def _run(self, job: tuple) -> None:
        kind = job[0]
        if kind == "segment":
            if self._finish(job[1]):
                self._retry_unfinished()
        elif kind == "recover":
            done = recover_segments(self.target, self.log)
            with self._lock:
                self.files += len(done)
        if self.retain is not None and kind in ("segment", "retain", "recover"):
            for name in apply_retention(self.target, self.retain, self.clock()):
                self.log(f"retention ({self.retain.describe()}): deleted {self.target / name}")

    def _finish(self, seg: _Segment) -> bool:
        """Close a file: finished and (segments) listed in the index. False: kept as a partial."""
        sink = seg.sink
        try:
            sink.close()
        except SinkError as err:
            if sink.written and sink.partial.exists():
                with self._lock:
                    self.unfinished.append(sink.partial)
            self.log(f"WARNING: camera {self.camera}: {seg.name} could not be finished ({err}); "
                     "its whole part is kept as a partial file")
            return False
        if not sink.written or not sink.path.exists():
            return True
        if self.segmented:
            interval = (seg.last - seg.start) / (seg.frames - 1) if seg.frames > 1 else 0.0
            SegmentIndex(self.target).append(segment_record(
                seg.name, seg.start, seg.last + interval, seg.frames, sink.path.stat().st_size, seg.first_frame,
                seg.gap_before))
        with self._lock:
            self.files += 1
        return True

    def _retry_unfinished(self) -> None:
        """Space came back: finish the partials an earlier failure left (segments)."""
        with self._lock:
            waiting, self.unfinished = list(self.unfinished), []
        if waiting and self.segmented:
            recover_segments(self.target, self.log)
        elif waiting:
            with self._lock:
                self.unfinished.extend(waiting)


class LiveLog:
    """A camera's detections log (`sinks.JsonlSink`) that does not stop the run when it cannot be
    written: the failure is said once, the records meanwhile are counted, and writing is tried
    again every RETRY_S seconds (the file opened again when it or its folder was deleted)."""

    every_frame = False

    def __init__(self, sink, camera: str = "", log: Say = lambda message: None):
        self.sink = sink
        self.camera = camera
        self.log = log
        self.not_logged = 0
        self.reason: Optional[str] = None
        self.last_failure: Optional[str] = None
        self._retry_at = 0.0

    def __enter__(self) -> "LiveLog":
        self.sink.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.sink.__exit__(*exc)
        except SinkError as err:
            self.log(f"WARNING: camera {self.camera}: {err}")

    def write(self, frame: Frame, image: np.ndarray, detections: Optional[Detections]) -> None:
        if self.reason is not None:
            if time.monotonic() < self._retry_at:
                self.not_logged += 1
                return
            try:
                self.sink.reopen()
            except SinkError:
                self._retry_at = time.monotonic() + RETRY_S
                self.not_logged += 1
                return
        try:
            self.sink.write(frame, image, detections)
        except SinkError as err:
            if self.reason is None:
                self.log(f"WARNING: camera {self.camera}: detections log stopped: {err}; "
                         f"trying again every {RETRY_S:g} s (the video goes on)")
            self.reason = self.last_failure = err.reason if isinstance(err, OutputFailed) else str(err)
            self._retry_at = time.monotonic() + RETRY_S
            self.not_logged += 1
            return
        if self.reason is not None:
            self.reason = None
            self.log(f"camera {self.camera}: detections log written again ({self.sink.path})")


class CameraRecording:
    """A camera's recording and detections log (either may be None), and their status as one."""

    def __init__(self, recorder: Optional[LiveRecorder] = None, log: Optional[LiveLog] = None):
        self.recorder = recorder
        self.log = log

    @property
    def sinks(self) -> list:
        return [sink for sink in (self.recorder, self.log) if sink is not None]

    def status(self) -> Optional[RecordingStatus]:
        """The video's status, with the detections log's trouble added (None: nothing recorded)."""
        recorder, log = self.recorder, self.log
        if recorder is None and log is None:
            return None
        status = recorder.status() if recorder is not None else RecordingStatus()
        if log is None or (log.reason is None and not log.not_logged):
            return status
        reasons = [r for r in (status.reason, f"detections log: {log.reason}" if log.reason else None) if r]
        state = RecordingState.RETRYING if log.reason and status.state is RecordingState.RECORDING else status.state
        last = status.last_failure or (f"detections log: {log.last_failure}" if log.last_failure else None)
        return RecordingStatus(state, "; ".join(reasons) or None, status.files, status.not_recorded + log.not_logged,
                               status.current, last)
