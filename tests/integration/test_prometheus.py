"""A real Prometheus scrapes streamer's /metrics and a real embedded Triton's metrics port.

The streamer side is MetricsServer reading counters that a thread of the test keeps
advancing (what the pipelines do in a run); the Triton side is the session's server. The
PromQL queries of docs/metrics.md are run here as written, so they stay valid.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict

import pytest

from streamer.metrics import CameraSample, LatencyHistogram, MetricsServer
from streamer.triton import TritonClient

from ..helpers import frame_image
from ..prometheus import Prometheus

pytestmark = pytest.mark.slow

METRICS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
# The queries of docs/metrics.md, verbatim (a test below keeps them in step).
FPS = "rate(streamer_frames_captured_total[1m])"
REFRESH = "rate(streamer_frames_inferred_total[1m])"
SKIPPED = "rate(streamer_frames_skipped_total[1m]) / rate(streamer_frames_captured_total[1m])"
DOWN = "streamer_camera_up == 0"
P95 = "histogram_quantile(0.95, sum by (camera, le) (rate(streamer_inference_latency_seconds_bucket[1m])))"
PEOPLE = 'rate(streamer_detections_total{class="person"}[1m]) * 60'
QUEUE_US = ("sum by (instance) (rate(nv_inference_queue_duration_us[1m]))"
            " / sum by (instance) (rate(nv_inference_request_success[1m]))")


@dataclass
class Counters:
    """One camera's counters, advanced by a thread like a live pipeline's."""

    name: str
    fps: float
    captured: int = 0
    inferred: int = 0
    camera_up: bool = True
    detections: Dict[str, int] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def tick(self) -> None:
        with self.lock:
            self.captured += 1
            if self.captured % 3 == 0:  # every third frame inferred, the others skipped
                self.inferred += 1
                self.detections["person"] = self.detections.get("person", 0) + 2
                self.latency.observe(0.12 if self.inferred % 2 else 0.4)

    def sample(self) -> CameraSample:
        with self.lock:
            return CameraSample(
                camera=self.name, captured=self.captured, shown=self.captured, inferred=self.inferred,
                skipped=self.captured - self.inferred, failed=0, reconnects=0, camera_up=self.camera_up,
                inference_up=True, frame_age_seconds=0.03, detections=dict(self.detections), latency=self.latency)


def advance(cameras, stop: threading.Event) -> None:
    start = time.monotonic()
    while not stop.wait(0.02):
        elapsed = time.monotonic() - start
        for cam in cameras:
            while cam.captured < elapsed * cam.fps:
                cam.tick()


def one(result):
    assert len(result) == 1, result
    return result[0][1]


def test_prometheus_scrapes_per_camera_series_and_the_embedded_triton(server_mobilenet, tmp_path):
    cameras = [Counters("front", fps=25), Counters("garage", fps=10)]
    stop = threading.Event()
    ticker = threading.Thread(target=advance, args=(cameras, stop), daemon=True)
    ticker.start()
    triton_metrics = f"127.0.0.1:{server_mobilenet.settings.metrics_port}"
    try:
        with MetricsServer(lambda: [c.sample() for c in cameras], port=0) as metrics, \
                Prometheus({"streamer": [f"127.0.0.1:{metrics.port}"], "triton": [triton_metrics]},
                           tmp_path / "prometheus") as prom:
            # Per-camera series are there and grow between two queries.
            first = prom.wait_for('streamer_frames_captured_total{camera="front"}', lambda r: len(r) == 1,
                                  timeout=90, what="the first scrape of streamer")
            prom.wait_for('streamer_frames_captured_total{camera="front"}', lambda r: one(r) > one(first),
                          timeout=60, what="the captured counter to grow")
            assert {labels["camera"] for labels, _ in prom.query("streamer_frames_captured_total")} == \
                {"front", "garage"}
            prom.wait_for("up == 1", lambda r: {labels["job"] for labels, _ in r} == {"streamer", "triton"},
                          timeout=60, what="both targets up")

            # The queries of docs/metrics.md.
            for query in (FPS, REFRESH):
                rates = prom.wait_for(query, lambda r: len(r) == 2 and all(v > 0 for _, v in r), timeout=60)
                assert {labels["camera"] for labels, _ in rates} == {"front", "garage"}
            skipped = prom.query(SKIPPED)
            assert len(skipped) == 2 and all(0 < v < 1 for _, v in skipped), skipped
            p95 = prom.wait_for(P95, lambda r: len(r) == 2 and all(math.isfinite(v) for _, v in r), timeout=60)
            assert all(0.3 < v <= 0.5 for _, v in p95), p95  # the 0.4 s observations fall in (0.3, 0.5]
            assert len(prom.query(PEOPLE)) == 2 and all(v > 0 for _, v in prom.query(PEOPLE))
            assert prom.query(DOWN) == []
            cameras[1].camera_up = False
            down = prom.wait_for(DOWN, lambda r: len(r) == 1, timeout=60)
            assert down[0][0]["camera"] == "garage"

            # Triton's own metrics: present, and counting an inference made meanwhile.
            before = one(prom.wait_for('nv_inference_count{model="fasterrcnn"}', lambda r: len(r) == 1,
                                       timeout=60, what="the first scrape of Triton"))
            with TritonClient(server_mobilenet.grpc_url) as client:
                client.infer(frame_image(0, 320, 240))
            prom.wait_for('nv_inference_count{model="fasterrcnn"}', lambda r: one(r) >= before + 1, timeout=60)
            queue_us = prom.query(QUEUE_US)
            assert queue_us and all(math.isfinite(v) and v >= 0 for _, v in queue_us), queue_us
    finally:
        stop.set()
        ticker.join(10)


def test_the_metrics_page_shows_these_queries_verbatim():
    text = METRICS_PAGE.read_text()
    for query in (FPS, REFRESH, SKIPPED, DOWN, P95, PEOPLE, QUEUE_US):
        assert f"\n{query}\n" in text, query
