"""streamer.metrics: the /metrics endpoint read over real HTTP and parsed with prometheus_client's
parser; values come from the samples at scrape time; the latency histogram; port errors."""

from __future__ import annotations

import math
import socket
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamer.errors import ExitCode, PortInUse, ServerStartError
from streamer.metrics import LATENCY_BUCKETS, CameraSample, LatencyHistogram, MetricsServer


def sample(camera="front", n=0, **changes) -> CameraSample:
    values = dict(camera=camera, captured=100 + n, shown=99 + n, inferred=40, skipped=55 + n, failed=3,
                  reconnects=2, camera_up=True, inference_up=False, frame_age_seconds=0.04,
                  detections={"person": 7, "car": 2}, latency=LatencyHistogram())
    values.update(changes)
    return CameraSample(**values)


def scrape(url: str) -> dict:
    """{(sample name, frozen labels): value} from a real GET, parsed by prometheus_client."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(scraped: dict, name: str, **labels) -> float:
    return scraped[(name, frozenset(labels.items()))]


def serve(samples, **kwargs) -> MetricsServer:
    return MetricsServer(samples, port=0, **kwargs).start()


def test_every_metric_equals_its_sample_per_camera():
    latency = LatencyHistogram()
    for s in (0.08, 0.12, 0.12, 0.6, 12.0):
        latency.observe(s)
    cams = [sample("front", latency=latency),
            sample("garage", n=10, camera_up=False, inference_up=True, frame_age_seconds=1.5,
                   detections={"dog": 1})]
    with serve(lambda: cams, info={"version": "0.1.0"}) as server:
        got = scrape(server.url)
    for cam in cams:
        for metric, attr in (("frames_captured", "captured"), ("frames_shown", "shown"),
                             ("frames_inferred", "inferred"), ("frames_skipped", "skipped"),
                             ("frames_failed", "failed"), ("reconnects", "reconnects")):
            assert value(got, f"streamer_{metric}_total", camera=cam.camera) == getattr(cam, attr)
        assert value(got, "streamer_camera_up", camera=cam.camera) == float(cam.camera_up)
        assert value(got, "streamer_inference_up", camera=cam.camera) == float(cam.inference_up)
        assert value(got, "streamer_frame_age_seconds", camera=cam.camera) == cam.frame_age_seconds
        for cls, n in cam.detections.items():
            assert value(got, "streamer_detections_total", camera=cam.camera, **{"class": cls}) == n
    assert ("streamer_detections_total", frozenset({("camera", "garage"), ("class", "person")})) not in got
    assert value(got, "streamer_inference_latency_seconds_count", camera="front") == 5
    assert value(got, "streamer_inference_latency_seconds_sum", camera="front") == pytest.approx(12.92)
    assert value(got, "streamer_inference_latency_seconds_bucket", camera="front", le="0.1") == 1
    assert value(got, "streamer_inference_latency_seconds_bucket", camera="front", le="0.15") == 3
    assert value(got, "streamer_inference_latency_seconds_bucket", camera="front", le="10.0") == 4
    assert value(got, "streamer_inference_latency_seconds_bucket", camera="front", le="+Inf") == 5
    assert value(got, "streamer_inference_latency_seconds_count", camera="garage") == 0
    assert value(got, "streamer_build_info", version="0.1.0") == 1


def test_histogram_buckets_are_cumulative_and_consistent_with_count_and_sum():
    latency = LatencyHistogram()
    observed = [0.01, 0.05, 0.05000001, 0.3, 0.3, 0.9, 2.5, 9.99, 10.0, 10.5, 60.0]
    for s in observed:
        latency.observe(s)
    with serve(lambda: [sample(latency=latency)]) as server:
        got = scrape(server.url)
    buckets = sorted(((float(dict(labels)["le"]), v) for (name, labels), v in got.items()
                      if name == "streamer_inference_latency_seconds_bucket"))
    assert [b for b, _ in buckets] == list(LATENCY_BUCKETS) + [math.inf]
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), "cumulative counts never decrease"
    for bound, cumulative in buckets:
        assert cumulative == sum(1 for s in observed if s <= bound), f"le={bound}"
    assert counts[-1] == value(got, "streamer_inference_latency_seconds_count", camera="front") == len(observed)
    assert value(got, "streamer_inference_latency_seconds_sum", camera="front") == pytest.approx(sum(observed))
    snap = latency.snapshot()
    assert snap.count == len(observed) and snap.buckets[-1] == (math.inf, len(observed))


def test_values_are_read_at_each_scrape_not_copied_at_start():
    counter = {"captured": 0}

    def samples():
        counter["captured"] += 5
        return [sample(captured=counter["captured"])]

    with serve(samples) as server:
        first = value(scrape(server.url), "streamer_frames_captured_total", camera="front")
        second = value(scrape(server.url), "streamer_frames_captured_total", camera="front")
    assert second > first


def test_no_frame_age_before_the_first_frame_and_no_cameras_is_a_valid_page():
    with serve(lambda: [sample(frame_age_seconds=None)]) as server:
        got = scrape(server.url)
    assert not any(name == "streamer_frame_age_seconds" for name, _ in got)
    assert value(got, "streamer_frames_captured_total", camera="front") == 100
    with serve(lambda: []) as server:
        assert not any(name.startswith("streamer_") for name, _ in scrape(server.url))


def test_label_values_with_odd_characters_are_escaped_and_read_back():
    odd = 'yard "north"\\east\nline 2 é'
    with serve(lambda: [sample(odd, detections={'traffic "light"': 4})]) as server:
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            raw = resp.read().decode()
        got = scrape(server.url)
    assert value(got, "streamer_frames_captured_total", camera=odd) == 100
    assert value(got, "streamer_detections_total", camera=odd, **{"class": 'traffic "light"'}) == 4
    assert 'camera="yard \\"north\\"\\\\east\\nline 2 é"' in raw  # escaped on the wire, one line per sample


def test_a_port_in_use_raises_port_in_use_naming_the_flag():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse) as info:
            MetricsServer(lambda: [], port=port).start()
    assert "--metrics-port" in str(info.value) and str(port) in str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == ExitCode.INFERENCE == 4


def test_a_host_that_is_not_ours_names_the_host_flag():
    with pytest.raises(ServerStartError) as info:
        MetricsServer(lambda: [], host="192.0.2.1", port=0).start()  # TEST-NET-1: never local
    assert "--metrics-host" in str(info.value) and not isinstance(info.value, PortInUse)


def _serving_threads():
    return [t for t in threading.enumerate() if "serve_forever" in t.name]


def test_stop_frees_the_port_and_joins_the_thread():
    before = len(_serving_threads())
    server = serve(lambda: [sample()])
    port, url = server.port, server.url
    assert url == f"http://127.0.0.1:{port}/metrics"
    scrape(url)
    assert len(_serving_threads()) == before + 1
    server.stop()
    assert len(_serving_threads()) == before
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)
    again = MetricsServer(lambda: [sample(captured=1)], port=port).start()  # the same port binds again
    try:
        assert value(scrape(again.url), "streamer_frames_captured_total", camera="front") == 1
    finally:
        again.stop()
    again.stop()  # idempotent


def test_uses_its_own_registry_not_the_global_one():
    with serve(lambda: [sample()]) as server:
        scrape(server.url)
        assert b"streamer_" not in generate_latest(REGISTRY)
        MetricsServer(lambda: [sample()], port=0)  # a second one in the same process: no name clash


def test_quantile_comes_from_a_bounded_window_of_recent_observations():
    latency = LatencyHistogram(window=10)
    assert latency.quantile(0.5) is None and len(latency.recent()) == 0
    for _ in range(100):
        latency.observe(5.0)
    for i in range(10):
        latency.observe(0.1 + i / 100)
    # The window holds only the last ten (0.10 .. 0.19); the buckets still count all 110.
    assert latency.recent().tolist() == pytest.approx([0.1 + i / 100 for i in range(10)])
    assert latency.quantile(0.5) == pytest.approx(0.145)
    assert latency.quantile(0.0) == pytest.approx(0.10) and latency.quantile(1.0) == pytest.approx(0.19)
    assert latency.snapshot().count == latency.count == 110
    latency.observe(7.0)  # the ring wraps: oldest out, order kept
    assert latency.recent()[-1] == 7.0 and latency.recent()[0] == pytest.approx(0.11)
    with pytest.raises(ValueError):
        latency.quantile(95)
    with pytest.raises(ValueError):
        latency.observe(-0.1)


def test_histogram_is_thread_safe():
    latency = LatencyHistogram(window=64)
    threads = [threading.Thread(target=lambda: [latency.observe(0.2) for _ in range(2000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = latency.snapshot()
    assert snap.count == 8000 and snap.buckets[-1][1] == 8000
    assert snap.sum == pytest.approx(1600.0)
