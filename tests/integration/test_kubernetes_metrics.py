"""The prometheus-adapter rule behind Triton's autoscaler (deploy/kubernetes/monitoring), evaluated
for real: a real Prometheus (Debian's `prometheus`) scrapes a real Triton (the embedded server)
with the `namespace` and `pod` labels the ServiceMonitor gives Triton's series in a cluster, and
answers the rule's seriesQuery and its metricsQuery, its template filled in the way
prometheus-adapter fills it for the autoscaler's pods: one value per pod, and above 0 once
requests have queued."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from streamer.server import free_port

from ..helpers import streamer, wait_until, write_clip

pytestmark = pytest.mark.slow

ADAPTER_VALUES = (Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "monitoring"
                  / "prometheus-adapter-values.yaml")
POD = "triton-7d9c6b5f4-x2x8q"


def api(base: str, path: str, **params) -> dict:
    with urllib.request.urlopen(f"{base}{path}?{urllib.parse.urlencode(params)}", timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]


@pytest.fixture
def prometheus(tmp_path, server_mobilenet):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("`prometheus` is not installed: apt-get install prometheus (Makefile TEST_DEBS and .ci/run list it)")
    target = f"127.0.0.1:{server_mobilenet.settings.metrics_port}"
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "triton", "static_configs": [
            {"targets": [target], "labels": {"namespace": "streamer", "pod": POD}}]}],
    }))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
        try:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    try:
        wait_until(ready, timeout=60, interval=0.5, what="Prometheus ready")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()


def test_adapter_rule_gives_the_queue_time_per_triton_pod(prometheus, server_mobilenet, tmp_path):
    rule = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"][0]
    # What the adapter lists (its discovery), with the labels it maps to Kubernetes objects.
    series = []

    def listed() -> bool:  # Prometheus scrapes every second; a loaded machine can take a few
        series[:] = api(prometheus, "/api/v1/series", **{"match[]": rule["seriesQuery"]})
        return bool(series)

    wait_until(listed, timeout=90, interval=1, what="the adapter's series in Prometheus")
    # Requests that wait: two in flight on a server with one model instance, on the seed model
    # (fasterrcnn_u8 would batch the second request with the first instead of queueing it).
    clip = write_clip(tmp_path / "clip.mp4", 60)  # seconds of work, so that scrapes see the counters move
    run = streamer("run", clip, "--triton", server_mobilenet.grpc_url, "--in-flight", "2", "--model", "fasterrcnn",
                   "--detections", tmp_path / "out.jsonl", timeout=300)
    assert run.returncode == 0, run.stderr

    assert series and {(s["namespace"], s["pod"]) for s in series} == {("streamer", POD)}

    # What the autoscaler gets for the pods it asks about.
    query = (rule["metricsQuery"].replace("<<.LabelMatchers>>", f'namespace="streamer",pod=~"{POD}"')
             .replace("<<.GroupBy>>", "pod"))
    answers = []

    def answered() -> bool:
        answers[:] = api(prometheus, "/api/v1/query", query=query)["result"]
        return bool(answers) and float(answers[0]["value"][1]) > 0

    wait_until(answered, timeout=90, interval=1, what=f"a queue time above 0 from {query}")
    assert [a["metric"] for a in answers] == [{"pod": POD}]
    queue_us = float(answers[0]["value"][1])
    assert queue_us < 60e6, "microseconds per request, averaged over the last minute"
