"""`streamer render`: draw a run's detections log onto its video again, without a server.

Each JSONL record of a file run carries what this needs besides its frame's detections:
the source's time base, the run's threshold and class filter, and the upright frame size
(`run_record`). Frames are matched by index and PTS; a log that does not fit the video is
refused before anything is kept. No Triton, no torch: only PyAV, OpenCV and numpy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple


from . import detlog
from .errors import ExitCode, SourceError, StreamerError
from .frames import Detections, Frame, Outcome
from .report import RunReport
from .selection import selection_stages
from .sinks import Mp4Sink
from .sources import FileSource, VideoInfo
from .stages import ServerShare
from .states import InferenceState


class LogMismatch(SourceError):
    """The detections log does not belong to the video."""


class RenderUsageError(StreamerError):
    exit_code = ExitCode.USAGE


run_record = detlog.run_fields  # what every record of a file run adds (kept under its old name)


@dataclass
class DetectionLog:
    path: Path
    records: List[dict]
    time_base: Optional[Fraction]
    threshold: float
    classes: Optional[List[int]]
    size: Optional[List[int]]
    names: Dict[int, str]  # label id -> name, as the run wrote them
    note: Optional[str] = None  # what was left out (a last line cut short by a kill)

    def name_of(self, label: int) -> str:
        return self.names.get(label, f"class {label}")

    def detections(self, record: dict) -> Optional[Detections]:
        """The record's detections (None: its inference failed in the run)."""
        return detlog.decode(record)

    def label_ids(self, names: Sequence[str]) -> Tuple[List[int], List[str]]:
        """(ids, names never seen in the log) for class names (case-insensitive), as the log knows them.
        A class the run filtered out (its --classes) is refused: the log cannot hold it."""
        by_name = {n.lower(): i for i, n in self.names.items()}
        ids, unknown = [], []
        for name in names:
            key = name.strip().lower()
            if key in by_name:
                ids.append(by_name[key])
            else:
                unknown.append(name.strip())
        if unknown and self.classes is not None:
            kept = ", ".join(self.name_of(i) for i in self.classes)
            raise RenderUsageError(
                f"--classes {','.join(unknown)}: the run kept only {kept} (its --classes); "
                "run again to get other classes")
        return ids, unknown


def load_log(path: Path) -> DetectionLog:
    """Read and check a `run --detections` JSONL file (SourceError with the cause otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"no such detections log: {path}")
    records, note = detlog.read_log(path)
    if not records:
        raise SourceError(f"{path} is empty: no frame records to render")
    first = records[0]
    if "threshold" not in first or "time_base" not in first:
        raise SourceError(f"{path} was written by a live run or an older streamer: it lacks time_base and "
                          "threshold; record a file run with this version to render it")
    if [r["frame"] for r in records] != list(range(len(records))):
        raise SourceError(f"{path}: frame records are not 0, 1, 2, ... in order; was the log edited or joined?")
    names: Dict[int, str] = {}
    for record in records:
        for det in record.get("detections") or []:
            names.setdefault(int(det["label"]), str(det.get("name", f"class {det['label']}")))
    tb = first.get("time_base")
    return DetectionLog(path=path, records=records, time_base=Fraction(tb) if tb else None,
                        threshold=float(first["threshold"]), classes=first.get("classes"),
                        size=first.get("size"), names=names, note=note)


class LogInference:
    """A detections log standing in for the model (`render`): each frame gets the answer the run
    recorded for it. A frame whose PTS differs from the log's means the log is not this video's."""

    state = InferenceState.ONLINE
    reconnects = 0
    moved = 0
    moved_slow = 0

    def __init__(self, log: DetectionLog, video_name: str):
        self.log = log
        self.video_name = video_name

    def process(self, frames: Iterable[Frame]) -> Iterator[Outcome]:
        for frame in frames:
            record = self.log.records[frame.index]
            if record["pts"] != frame.pts:
                raise LogMismatch(
                    f"{self.log.path} does not belong to {self.video_name}: frame {frame.index} has pts "
                    f"{frame.pts} in the video but {record['pts']} in the log")
            detections = self.log.detections(record)
            yield Outcome(frame, detections, None if detections is not None else "failed in the run")

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass

    def compute_stats(self) -> Tuple[int, float]:
        return 0, 0.0

    def servers(self) -> List[ServerShare]:
        return []


def render(video: Path, log: DetectionLog, out: Path, threshold: Optional[float], classes: Optional[Sequence[str]],
           audio: bool = True, say: Callable[[str], None] = print) -> RunReport:
    """Draw `log` onto `video` into `out` (an mp4 following the run's rules): the file scheduler with
    the log for inference, and the run's own selection (class filter, then threshold)."""
    from .pipeline import FilePipeline
    from .render import BoxAnnotator

    if threshold is not None and threshold < log.threshold:
        raise RenderUsageError(f"--threshold {threshold:g} is below the log's {log.threshold:g}: the run kept only "
                               f"scores >= {log.threshold:g}; use {log.threshold:g} or more (or run again)")
    threshold = log.threshold if threshold is None else threshold
    label_ids = None
    if classes:
        label_ids, unseen = log.label_ids(classes)
        if unseen:
            say(f"note: no detection of {', '.join(unseen)} in {log.path.name} (check the spelling): "
                "nothing drawn for them")
    if log.note:
        say(log.note)
    started = time.monotonic()
    with FileSource(video, audio=audio, log=say) as src:
        info = src.info
        _check_header(log, info)
        say(info.describe())
        sink = Mp4Sink.for_file(info, src.audio_tracks, out, say)
        with sink:
            pipeline = FilePipeline(source=src, inference=LogInference(log, video.name),
                                    stages=selection_stages(threshold, label_ids),
                                    annotators=[BoxAnnotator(log.name_of)], sinks=[sink],
                                    max_frames=len(log.records), name=video.name)
            try:
                stats = pipeline.run()
                if not stats.interrupted and stats.written < len(log.records):
                    raise LogMismatch(f"{log.path} does not belong to {video.name}: the log has "
                                      f"{len(log.records)} frames, the video only {stats.written}")
            except BaseException:
                sink.discard()
                raise
        total = info.frame_count or src.decoded
    elapsed = time.monotonic() - started
    if not stats.interrupted and stats.written < total:
        say(f"note: the log covers frames 0-{stats.written - 1} of the video's {total} (a --max-frames run?); "
            "rendered those")
    fps = stats.written / elapsed if elapsed > 0 else 0.0
    report = RunReport(command="render", exit_code=ExitCode.INTERRUPTED if stats.interrupted else ExitCode.OK,
                       elapsed_s=elapsed, streams=[stats.report(video.name, log.name_of)])
    report.lines.append(f"rendered {stats.written} frame(s) | {fps:.1f} fps")
    report.notes.append(f"wrote {out}" if out.exists() else "nothing written")
    return report


def _check_header(log: DetectionLog, info: VideoInfo) -> None:
    if log.time_base is not None and info.time_base is not None and log.time_base != info.time_base:
        raise LogMismatch(f"{log.path} does not belong to {info.name}: its time base is {log.time_base}, "
                          f"the video's {info.time_base}")
    if log.size and list(log.size) != [info.width, info.height]:
        raise LogMismatch(f"{log.path} does not belong to {info.name}: its frames are "
                          f"{log.size[0]}x{log.size[1]}, the video's {info.width}x{info.height}")
    if info.frame_count and len(log.records) > info.frame_count:
        raise LogMismatch(f"{log.path} does not belong to {info.name}: the log has {len(log.records)} frames, "
                          f"the video {info.frame_count}")
