"""Prometheus metrics for a run: read from the run's own counters at scrape time.

Nothing here counts anything itself. The runner hands `MetricsServer` a callable that returns
one `CameraSample` per camera, built from the same counters the accounting line prints; a
custom collector turns those into metric families on every scrape, so the two can never
disagree or count twice. The only state kept here is `LatencyHistogram`, which the pipeline
observes into and both readers use: the collector its buckets, the accounting line its
recent quantiles.

The endpoint is prometheus_client's own HTTP server on a registry of our own (never the
library's global one), on 127.0.0.1 unless the user widens it.
"""

from __future__ import annotations

import errno
import math
import socket
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from .errors import PortInUse, ServerStartError

DEFAULT_PORT = 9108
LOOPBACK = "127.0.0.1"

# Upper bounds in seconds: fine steps where fast models answer (50-300 ms on a CPU, less on a
# GPU), coarse ones up to the 10 s of a large model on a small CPU; +Inf is added.
LATENCY_BUCKETS: Tuple[float, ...] = (
    0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0,
)
# How many recent observations `LatencyHistogram.quantile` looks at (a fixed-size ring).
QUANTILE_WINDOW = 2048


class HistogramSnapshot(NamedTuple):
    buckets: List[Tuple[float, int]]  # (upper bound, cumulative count), ascending, ends with (inf, count)
    sum: float
    count: int


class LatencyHistogram:
    """Inference latencies of one camera: Prometheus buckets over the whole run, plus a
    ring of the most recent `window` observations for quantiles.

    Thread-safe: the pipeline observes, the scrape thread and the accounting line read.
    Memory is fixed (len(bounds) + window numbers) however long the run.
    """

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS, window: int = QUANTILE_WINDOW):
        bounds = tuple(float(b) for b in bounds)
        if not bounds or list(bounds) != sorted(set(bounds)) or any(math.isinf(b) or b <= 0 for b in bounds):
            raise ValueError("histogram bounds must be positive, finite and strictly ascending")
        if window < 1:
            raise ValueError("the quantile window needs at least one observation")
        self._bounds = bounds + (math.inf,)
        self._counts = [0] * len(self._bounds)  # per bucket, not cumulative
        self._sum = 0.0
        self._count = 0
        self._recent = np.zeros(window, np.float64)
        self._lock = threading.Lock()

    @property
    def bounds(self) -> Tuple[float, ...]:
        """The upper bounds, +Inf last."""
        return self._bounds

    def observe(self, seconds: float) -> None:
        seconds = float(seconds)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"a latency must be a finite number of seconds >= 0, not {seconds}")
        i = int(np.searchsorted(self._bounds, seconds, side="left"))  # first bound >= seconds
        with self._lock:
            self._counts[i] += 1
            self._sum += seconds
            self._recent[self._count % len(self._recent)] = seconds
            self._count += 1

    def snapshot(self) -> HistogramSnapshot:
        """Cumulative buckets (Prometheus' `le`), sum and count, consistent with each other."""
        with self._lock:
            counts, total, count = list(self._counts), self._sum, self._count
        cumulative, running = [], 0
        for bound, n in zip(self._bounds, counts):
            running += n
            cumulative.append((bound, running))
        return HistogramSnapshot(cumulative, total, count)

    def recent(self) -> np.ndarray:
        """A copy of the last `window` observations (fewer before the window fills), oldest first."""
        with self._lock:
            n, size = self._count, len(self._recent)
            if n <= size:
                return self._recent[:n].copy()
            start = n % size
            return np.concatenate((self._recent[start:], self._recent[:start]))

    def quantile(self, q: float) -> Optional[float]:
        """The q-quantile (0..1) of the last `window` observations, linearly interpolated as
        numpy.percentile does; None before the first observation. For the accounting line:
        over a long run this describes recent behaviour, while Prometheus' buckets cover it all."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"a quantile is between 0 and 1, not {q}")
        values = self.recent()
        if not len(values):
            return None
        return float(np.percentile(values, q * 100.0))

    @property
    def count(self) -> int:
        with self._lock:
            return self._count


@dataclass(frozen=True)
class CameraSample:
    """One camera's counters at the moment of a scrape."""

    camera: str  # the label value: the camera's name (never a URL: it may hold a password)
    captured: int
    shown: int
    inferred: int
    skipped: int  # skipped for inference (a newer frame was taken instead)
    failed: int
    reconnects: int
    camera_up: bool
    inference_up: bool
    frame_age_seconds: Optional[float]  # age of the newest shown frame when it was shown; None: none yet
    detections: Mapping[str, int] = field(default_factory=dict)  # class name -> detections so far
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    tracks_active: int = 0  # tracks the camera's tracker follows now (0 with --no-track)
    counts: Optional[object] = None  # events.Counts of its zones and lines (None: none)
    motion: Optional[bool] = None  # the camera sees motion now (None: no motion detector: no series)
    skipped_by_reason: Mapping[str, int] = field(default_factory=dict)  # `skipped` by reason (busy, every, still)


# (name without _total, documentation, CameraSample attribute)
_COUNTERS = (
    ("streamer_frames_captured", "Frames read from the camera.", "captured"),
    ("streamer_frames_shown", "Frames shown and recorded (every captured frame).", "shown"),
    ("streamer_frames_inferred", "Frames with an inference result.", "inferred"),
    ("streamer_frames_skipped", "Frames not sent for inference because a newer frame was taken.", "skipped"),
    ("streamer_frames_failed", "Frames whose inference failed.", "failed"),
    ("streamer_reconnects", "Reconnections to the camera after it dropped.", "reconnects"),
)
_GAUGES = (
    ("streamer_camera_up", "1 while the camera delivers frames, 0 while it is offline.", "camera_up"),
    ("streamer_inference_up", "1 while inference answers, 0 while the server is offline.", "inference_up"),
)
TRACKS = "streamer_tracks_active"
MOTION = "streamer_motion"
SKIPPED_BY_REASON = "streamer_frames_skipped_by_reason"
FRAME_AGE = "streamer_frame_age_seconds"
DETECTIONS = "streamer_detections"
LATENCY = "streamer_inference_latency_seconds"
BUILD_INFO = "streamer_build"  # exposed as streamer_build_info
LINE_CROSSINGS = "streamer_line_crossings"  # exposed as streamer_line_crossings_total
ZONE_OBJECTS = "streamer_zone_objects"
ZONE_ENTRIES = "streamer_zone_entries"  # exposed as streamer_zone_entries_total
OUTPUT_UP = "streamer_event_output_up"
OUTPUT_EVENTS = "streamer_event_output_events"  # exposed as ..._total{output, result}


class SampleCollector:
    """A prometheus_client collector that reads the camera samples at every scrape."""

    def __init__(self, samples: Callable[[], Iterable[CameraSample]], info: Optional[Mapping[str, str]] = None,
                 outputs: Callable[[], Iterable] = lambda: ()):
        self._samples = samples
        self._info = dict(info or {})
        self._outputs = outputs  # the event outputs' statuses (events.OutputStatus)

    def describe(self) -> Iterator[Metric]:
        """The families without samples: lets the registry check names without reading counters."""
        return self._families([])

    def collect(self) -> Iterator[Metric]:
        samples = list(self._samples())
        yield from self._families(samples)
        yield from self._event_families(samples, list(self._outputs()))

    @staticmethod
    def _event_families(samples: List[CameraSample], outputs: List) -> Iterator[Metric]:
        """Zones and lines (from each camera's counts) and the event outputs' states."""
        crossings = CounterMetricFamily(LINE_CROSSINGS, "Objects that crossed a counting line, by direction "
                                        "(in: onto the line's right-hand side as drawn) and class.",
                                        labels=["camera", "line", "direction", "label"])
        inside = GaugeMetricFamily(ZONE_OBJECTS, "Objects inside a zone now, by class.",
                                   labels=["camera", "zone", "label"])
        entries = CounterMetricFamily(ZONE_ENTRIES, "Objects that entered a zone, by class.",
                                      labels=["camera", "zone", "label"])
        for s in samples:
            if s.counts is None:
                continue
            for line, dirs in sorted(s.counts.lines.items()):
                for direction, per in sorted(dirs.items()):
                    for label, n in sorted(per.items()):
                        crossings.add_metric([s.camera, line, direction, label], int(n))
            for zone, kinds in sorted(s.counts.zones.items()):
                labels = set(kinds.get("entered", {})) | set(kinds.get("inside", {}))
                for label in sorted(labels):
                    inside.add_metric([s.camera, zone, label], int(kinds.get("inside", {}).get(label, 0)))
                    entries.add_metric([s.camera, zone, label], int(kinds.get("entered", {}).get(label, 0)))
        yield crossings
        yield inside
        yield entries
        up = GaugeMetricFamily(OUTPUT_UP, "1 while an event output is connected (or writing), else 0.",
                               labels=["output"])
        events = CounterMetricFamily(OUTPUT_EVENTS, "Events per output: sent, dropped (its queue was full), "
                                     "failed (given up after retries).", labels=["output", "result"])
        from .events.types import OutputState

        for status in outputs:
            up.add_metric([status.name], 1 if status.state is OutputState.CONNECTED else 0)
            for result in ("sent", "dropped", "failed"):
                events.add_metric([status.name, result], int(getattr(status, result)))
        yield up
        yield events

    def _families(self, samples: List[CameraSample]) -> Iterator[Metric]:
        if self._info:
            yield InfoMetricFamily(BUILD_INFO, "The streamer run: version and settings.", value=self._info)
        for name, doc, attr in _COUNTERS:
            family = CounterMetricFamily(name, doc, labels=["camera"])
            for s in samples:
                family.add_metric([s.camera], int(getattr(s, attr)))
            yield family
        for name, doc, attr in _GAUGES:
            family = GaugeMetricFamily(name, doc, labels=["camera"])
            for s in samples:
                family.add_metric([s.camera], 1 if getattr(s, attr) else 0)
            yield family
        by_reason = CounterMetricFamily(SKIPPED_BY_REASON, "Frames not sent for inference, by reason: busy (a newer "
                                        "frame was taken), every (--infer-every), still (nothing moved).",
                                        labels=["camera", "reason"])
        for s in samples:
            for reason, n in sorted(s.skipped_by_reason.items()):
                by_reason.add_metric([s.camera, reason], int(n))
        yield by_reason
        motion = GaugeMetricFamily(MOTION, "1 while the camera's motion detector sees motion, 0 while the "
                                   "picture is still (cameras with a motion detector only).", labels=["camera"])
        for s in samples:
            if s.motion is not None:
                motion.add_metric([s.camera], 1 if s.motion else 0)
        yield motion
        tracks = GaugeMetricFamily(TRACKS, "Objects the camera's tracker follows now.", labels=["camera"])
        for s in samples:
            tracks.add_metric([s.camera], int(s.tracks_active))
        yield tracks
        age = GaugeMetricFamily(FRAME_AGE, "Age of the newest shown frame when it was shown "
                                "(capture to display), seconds.", labels=["camera"])
        for s in samples:
            if s.frame_age_seconds is not None:
                age.add_metric([s.camera], float(s.frame_age_seconds))
        yield age
        detections = CounterMetricFamily(DETECTIONS, "Detections recorded, by class.", labels=["camera", "class"])
        for s in samples:
            for cls, n in sorted(s.detections.items()):
                detections.add_metric([s.camera, cls], int(n))
        yield detections
        latency = HistogramMetricFamily(LATENCY, "Inference latency, request sent to answer received, seconds.",
                                        labels=["camera"])
        for s in samples:
            snap = s.latency.snapshot()
            latency.add_metric([s.camera], [(floatToGoString(b), n) for b, n in snap.buckets], snap.sum)
        yield latency


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return LOOPBACK if host != "::" else "[::1]"
    return f"[{host}]" if ":" in host else host


class MetricsServer:
    """The /metrics endpoint: `with MetricsServer(samples).start() as m: print(m.url)`.

    `samples` is called on the server's thread at every scrape: it must be quick and read
    counters that other threads update (ints and a LatencyHistogram are safe to read).
    `port=0` picks a free port (read `port` after start). `info` becomes a
    `streamer_build_info{...} 1` series; its values must hold no secrets.
    """

    def __init__(
        self,
        samples: Callable[[], Iterable[CameraSample]],
        host: str = LOOPBACK,
        port: int = DEFAULT_PORT,
        info: Optional[Mapping[str, str]] = None,
        outputs: Callable[[], Iterable] = lambda: (),
    ):
        self.host = host
        self.port = int(port)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SampleCollector(samples, info, outputs))
        self._httpd = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}/metrics"

    def start(self) -> "MetricsServer":
        if self._httpd is not None:
            raise RuntimeError("the metrics server is already started")
        try:
            self._httpd, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as err:
            raise self._bind_error(err) from err
        self.port = self._httpd.server_address[1]
        return self

    def _bind_error(self, err: OSError) -> ServerStartError:
        where = f"{self.host}:{self.port}"
        if err.errno == errno.EADDRINUSE:
            return PortInUse(f"metrics port {self.port} on {self.host} is already in use (another streamer?); "
                             f"choose another with --metrics-port")
        if err.errno == errno.EACCES:
            return ServerStartError(f"not allowed to listen on {where} for metrics (ports below 1024 need root); "
                             f"choose another with --metrics-port")
        if isinstance(err, socket.gaierror):
            return ServerStartError(f"cannot serve metrics on {where}: {self.host} is not a known host name; "
                                    f"fix --metrics-host (127.0.0.1, or 0.0.0.0 for every interface)")
        if err.errno == errno.EADDRNOTAVAIL:
            return ServerStartError(f"cannot serve metrics on {where}: {self.host} is not an address of this "
                                    f"machine; fix --metrics-host (127.0.0.1, or 0.0.0.0 for every interface)")
        return ServerStartError(f"cannot serve metrics on {where}: {err.strerror or err}; "
                                f"check --metrics-host and --metrics-port")

    def stop(self) -> None:
        """Stop serving, close the socket (the port is free again) and join the server thread."""
        httpd, thread, self._httpd, self._thread = self._httpd, self._thread, None, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(10)

    def __enter__(self) -> "MetricsServer":
        if self._httpd is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
