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

Live streams also carry "camera": how the camera ended ("stopped"; "failed": given up) and
"error": why it was given up (null when it was not); a camera that records also "recording":
{"state": "recording" | "retrying" | "stopped", "reason", "files", "not_recorded", "current"}.

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
    recording: Optional[dict] = None  # live: how its recording did (RecordingStatus.to_json)

    def to_json(self) -> dict:
        out = {"name": self.name, "kind": str(self.kind), "frames": dict(self.frames), "fps": round(self.fps, 3),
               "latency_ms": dict(self.latency_ms), "detections_by_class": dict(self.detections_by_class),
               "reconnects": self.reconnects}
        if self.frame_age_ms is not None:
            out["frame_age_ms"] = dict(self.frame_age_ms)
        if self.camera is not None:
            out["camera"], out["error"] = self.camera, self.error
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
    streams: List[StreamReport] = field(default_factory=list)
    lines: List[str] = field(default_factory=list)  # printed on stdout: the accounting
    notes: List[str] = field(default_factory=list)  # printed on stderr after the accounting

    def to_json(self) -> dict:
        return {"command": self.command, "exit_code": int(self.exit_code), "elapsed_s": round(self.elapsed_s, 3),
                "model": self.model, "servers": list(self.servers), "moved": self.moved,
                "moved_slow": self.moved_slow,
                "streams": [s.to_json() for s in self.streams]}

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
