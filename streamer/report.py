"""What a run did: `RunReport`, returned by `run`, `watch` and `render`.

The CLI prints its `lines` (the accounting lines, on stdout) and its `notes` (files written,
warnings, on stderr), and `--summary FILE` writes `to_json()`. The figures come from the same
counters the metrics endpoint reads (`RunStats`, `LiveStats`), never counted twice.

JSON shape (more keys may come; none will change meaning):

    {"command": "run" | "watch" | "render", "exit_code": 0, "elapsed_s": 12.3,
     "model": {"arch", "weights", "untrained", "min_size", "max_size", "served_model", "transport"} | null,
     "servers": [{"url", "frames"}], "moved": 0, "moved_slow": 0,
     "streams": [{"name", "kind": "file" | "live", "frames": {...}, "fps", "latency_ms": {"p50", "p95"},
                  "detections_by_class": {"person": 12, ...}, "reconnects": 0}]}

A stream with zones or counting lines also carries their counts (events.Counts):
"lines": {"NAME": {"in": {"person": 3}, "out": {...}}} and "zones": {"NAME": {"entered": {...},
"inside": {...} (at the end), "max_inside": {...}}}. A run with event outputs (--events) has
"event_outputs": [{"name", "state", "sent", "dropped", "failed", "reason"}].

Live streams also carry "camera": how the camera ended ("stopped"; "failed": given up) and
"error": why it was given up (null when it was not); a camera that records also "recording":
{"state": "recording" | "retrying" | "stopped", "reason", "files", "not_recorded", "current"}.

Every stream carries "skipped_by_reason": the frames not inferred, by why (files: {"every",
"still"}, whose sum is `tracked`; live: {"busy", "every", "still"}, whose sum is `skipped`).
Live streams carry "detection_age_ms" {"p50", "p95"}: how old the answer behind the drawn boxes
was on each shown frame. A stream with a motion detector (`--infer-on motion`) carries "motion":
{"frames": frames that showed motion, "share": their fraction of the frames looked at}.

`moved`: frames a pool took back from a server that broke and gave to another; `moved_slow`:
frames a slow server held past the deadline, resent to another server (files: the first answer is
kept) or given up as failed (live: stale by then).

A file stream's `frames` has read, inferred, written, failed, dropped (read but not written:
interrupted); a live one's captured, shown, inferred, skipped, failed, dropped (display could
not keep up), not_shown_at_exit. Live streams also carry `frame_age_ms` {"p50", "p95"}.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .states import StreamKind


def percentiles_ms(seconds: Sequence[float]) -> Dict[str, Optional[float]]:
    """{"p50", "p95"} in milliseconds (None when there is nothing to measure)."""
    if not len(seconds):
        return {"p50": None, "p95": None}
    p50, p95 = np.percentile(np.asarray(seconds, dtype=np.float64), [50, 95]) * 1000
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1)}


@dataclass
class StreamReport:
    """One stream of a run: a file, or one live camera."""

    name: str
    kind: StreamKind
    frames: Dict[str, int]
    fps: float
    latency_ms: Dict[str, Optional[float]]
    detections_by_class: Dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    frame_age_ms: Optional[Dict[str, Optional[float]]] = None
    camera: Optional[str] = None  # live: the capture's state at the end ("stopped", "failed")
    error: Optional[str] = None  # live: why the camera was given up
    counts: Optional[dict] = None  # zones and lines: events.Counts.to_json() (None: none configured)
    skipped_by_reason: Optional[Dict[str, int]] = None  # frames not inferred, by why (busy, every, still)
    detection_age_ms: Optional[Dict[str, Optional[float]]] = None  # live: age of the answer behind shown boxes
    motion: Optional[Dict[str, float]] = None  # frames with motion, and the share of frames (None: no detector)
    recording: Optional[dict] = None  # live: how its recording did (RecordingStatus.to_json)

    def to_json(self) -> dict:
        out = {"name": self.name, "kind": str(self.kind), "frames": dict(self.frames), "fps": round(self.fps, 3),
               "latency_ms": dict(self.latency_ms), "detections_by_class": dict(self.detections_by_class),
               "reconnects": self.reconnects}
        if self.frame_age_ms is not None:
            out["frame_age_ms"] = dict(self.frame_age_ms)
        if self.camera is not None:
            out["camera"], out["error"] = self.camera, self.error
        if self.counts is not None:
            out["lines"], out["zones"] = self.counts["lines"], self.counts["zones"]
        if self.skipped_by_reason is not None:
            out["skipped_by_reason"] = dict(self.skipped_by_reason)
        if self.detection_age_ms is not None:
            out["detection_age_ms"] = dict(self.detection_age_ms)
        if self.motion is not None:
            out["motion"] = dict(self.motion)
        if self.recording is not None:
            out["recording"] = dict(self.recording)
        return out


@dataclass
class RunReport:
    command: str
    exit_code: int = 0
    elapsed_s: float = 0.0
    model: Optional[dict] = None
    servers: List[dict] = field(default_factory=list)  # {"url", "frames"}
    moved: int = 0
    moved_slow: int = 0
    invalid_boxes: int = 0  # boxes the model answered with coordinates or scores not finite (dropped)
    streams: List[StreamReport] = field(default_factory=list)
    event_outputs: List[dict] = field(default_factory=list)  # events.OutputStatus.to_json() per output
    lines: List[str] = field(default_factory=list)  # printed on stdout: the accounting
    notes: List[str] = field(default_factory=list)  # printed on stderr after the accounting

    def to_json(self) -> dict:
        out = {"command": self.command, "exit_code": int(self.exit_code), "elapsed_s": round(self.elapsed_s, 3),
               "model": self.model, "servers": list(self.servers), "moved": self.moved,
               "moved_slow": self.moved_slow, "invalid_boxes": self.invalid_boxes,
               "streams": [s.to_json() for s in self.streams]}
        if self.event_outputs:
            out["event_outputs"] = list(self.event_outputs)
        return out

    def write_summary(self, target: str) -> None:
        """`--summary FILE` (`-`: stdout): the report as one JSON document."""
        text = json.dumps(self.to_json(), indent=2) + "\n"
        if target == "-":
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            Path(target).write_text(text, encoding="utf-8")


def model_json(info, served_model: Optional[str] = None, transport: Optional[str] = None) -> dict:
    """The served model as the report names it (`info`: contract.ModelInfo)."""
    return {"arch": info.arch, "weights": info.weights, "untrained": info.untrained, "min_size": info.min_size,
            "max_size": info.max_size, "served_model": served_model, "transport": transport}


def counts_line(counts) -> str:
    """The accounting line's short form of a stream's counts (events.Counts): `door in 3 out 1,
    driveway entered 2` (every class added up; "" without zones or lines)."""
    parts = []
    for name, dirs in counts.lines.items():
        parts.append(f"{name} in {sum(dirs.get('in', {}).values())} out {sum(dirs.get('out', {}).values())}")
    for name, kinds in counts.zones.items():
        parts.append(f"{name} entered {sum(kinds.get('entered', {}).values())}")
    return ", ".join(parts)
