"""The detections log (JSON lines): how a record is written and read, in one place.

One JSON object per line, no header line:

    {"frame": 0, "pts": 0, "time": 0.0, "status": "ok" | "tracked" | "failed",
     [file runs:] "time_base": "1/25", "size": [W, H], "threshold": 0.5, "classes": null | [ids],
     "detections": [{"name": "person", "label": 1, "score": 0.91, "box": [x1, y1, x2, y2]
                     [, "track_id": 12 when tracking gives ids]}]}

Boxes keep BOX_DECIMALS, scores SCORE_DECIMALS (what is drawn is what the log can redraw).
`sinks.JsonlSink` writes records with `encode` (each handed to the OS whole as it is written:
`recording.lines`); `rerender.load_log` reads them with `read_log` (a last line cut short by a kill
is left out, with a note) and `decode`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .errors import SourceError
from .frames import BOX_DECIMALS, SCORE_DECIMALS, Detections, Frame
from .recording.lines import read_json_lines

REQUIRED = frozenset({"frame", "pts", "detections"})


def run_fields(info, threshold: float, label_ids: Optional[Sequence[int]]) -> dict:
    """What every record of a file run adds so `render` can redraw it (`info`: sources.VideoInfo)."""
    return {
        "time_base": str(info.time_base) if info.time_base else None,
        "size": [info.width, info.height],
        "threshold": threshold,
        "classes": sorted(int(i) for i in label_ids) if label_ids is not None else None,
    }


def encode(frame: Frame, detections: Optional[Detections], name_of: Callable[[int], str],
           extra: Optional[dict] = None) -> dict:
    """One frame's record (detections None: its inference failed)."""
    items: List[dict] = []
    if detections is not None:
        ids = detections.track_ids
        for i, (box, label, score) in enumerate(zip(detections.boxes, detections.labels, detections.scores)):
            item = {
                "name": name_of(int(label)),
                "label": int(label),
                "score": round(float(score), SCORE_DECIMALS),
                "box": [round(float(v), BOX_DECIMALS) for v in box],
            }
            if ids is not None:
                item["track_id"] = int(ids[i])
            items.append(item)
    time_s = frame.time
    return {
        "frame": frame.index,
        "pts": frame.pts,
        "time": None if time_s is None else round(time_s, 6),
        "status": status_of(detections),
        **(extra or {}),
        "detections": items,
    }


OK, FAILED, TRACKED = "ok", "failed", "tracked"


def status_of(detections: Optional[Detections]) -> str:
    """ok: the model saw the frame; tracked: it did not, the boxes were carried or interpolated
    by the tracker (possibly none); failed: its inference failed (nothing drawn)."""
    if detections is None:
        return FAILED
    return TRACKED if TRACKED in detections.data else OK


def decode(record: dict) -> Optional[Detections]:
    """A record's detections (None: its inference failed in the run); track ids when it has them;
    a `tracked` record's detections are marked as the tracker's (data["tracked"])."""
    status = record.get("status")
    if status not in (OK, TRACKED):
        return None
    items = record.get("detections") or []
    ids = None
    if items and all("track_id" in d for d in items):
        ids = np.array([d["track_id"] for d in items], np.int64)
    data = {TRACKED: np.ones(len(items), bool)} if status == TRACKED else {}
    return Detections(np.array([d["box"] for d in items], np.float32).reshape(-1, 4),
                      np.array([d["label"] for d in items], np.int64),
                      np.array([d["score"] for d in items], np.float32), track_ids=ids, data=data)


def read_log(path: Path) -> Tuple[List[dict], Optional[str]]:
    """Every record of a log file, checked to be frame records (SourceError with the cause
    otherwise), and a note when its last line was cut short (a run killed while writing it: that
    line is left out) or None."""
    try:
        found = read_json_lines(path)
    except (OSError, UnicodeDecodeError) as err:
        raise SourceError(f"cannot read {path} ({err})") from err
    if found.bad_line is not None:
        if found.bad_reason == "not a JSON object":
            raise SourceError(f"{path}: line {found.bad_line} is not a frame record of `streamer run --detections`")
        raise SourceError(f"{path}: line {found.bad_line} is not JSON ({found.bad_reason}); "
                          "is it a `run --detections` log?")
    for n, record in enumerate(found.records, 1):
        if not REQUIRED <= record.keys():
            raise SourceError(f"{path}: line {n} is not a frame record of `streamer run --detections`")
    note = None
    if found.torn:
        note = f"note: {found.torn} (the run was killed while writing it)"
    return found.records, note


def read_records(path: Path) -> List[dict]:
    """Every record of a log file (see read_log; a torn last line is left out)."""
    return read_log(path)[0]
