"""`--summary`: the run report as JSON, for `run` (a file), `watch` (file cameras) and `render`.

The printed accounting lines have their own format tests (test_run_file, test_watch, test_render);
these check the report's figures, which come from the same counters.
"""

from __future__ import annotations

import json

import pytest

from ..helpers import read_jsonl, read_video, streamer, write_clip

pytestmark = pytest.mark.slow


def test_run_summary_counts_every_frame_of_a_file(tmp_path, server_v2):
    clip = write_clip(tmp_path / "in.mp4", 12)
    out, log, summary = tmp_path / "out.mp4", tmp_path / "out.jsonl", tmp_path / "summary.json"
    result = streamer("run", clip, "--out", out, "--detections", log, "--triton", server_v2.grpc_url,
                      "--summary", summary)
    assert result.returncode == 0, result.stderr
    assert "frames: read 12, inferred 12, written 12, failed 0" in result.stdout  # still printed as before

    report = json.loads(summary.read_text())
    assert report["command"] == "run" and report["exit_code"] == 0 and report["elapsed_s"] > 0
    assert report["model"]["arch"] == "fasterrcnn_resnet50_fpn_v2" and report["model"]["untrained"] is True
    assert report["servers"] == [{"url": server_v2.grpc_url, "frames": 12}] and report["moved"] == 0
    [stream] = report["streams"]
    assert stream["name"] == "in.mp4" and stream["kind"] == "file"
    assert stream["frames"] == {"read": 12, "inferred": 12, "written": 12, "failed": 0, "dropped": 0,
                                "tracked": 0}
    assert stream["fps"] > 0
    assert 0 < stream["latency_ms"]["p50"] <= stream["latency_ms"]["p95"]
    # the per-class counts are what the log holds (drawn = logged: the same selection)
    logged: dict = {}
    for record in read_jsonl(log):
        for det in record["detections"]:
            logged[det["name"]] = logged.get(det["name"], 0) + 1
    assert logged and stream["detections_by_class"] == logged
    assert len(read_video(out).pts) == 12


def test_summary_on_stdout_moves_the_accounting_line_to_stderr(tmp_path, server_empty):
    clip = write_clip(tmp_path / "in.mp4", 4)
    result = streamer("run", clip, "--triton", server_empty.grpc_url, "--summary", "-")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # stdout is the JSON document alone
    assert report["streams"][0]["frames"]["written"] == 4
    assert "frames: read 4, inferred 4, written 4, failed 0" in result.stderr


def test_watch_summary_has_one_live_stream_per_camera(tmp_path, server_empty):
    a, b = write_clip(tmp_path / "a.mp4", 150), write_clip(tmp_path / "b.mp4", 125)  # 6 s and 5 s at 25 fps
    summary = tmp_path / "summary.json"
    result = streamer("watch", a, b, "--triton", server_empty.grpc_url, "--summary", summary,
                      "--status-every", "0")
    assert result.returncode == 0, result.stderr
    report = json.loads(summary.read_text())
    assert report["command"] == "watch" and report["exit_code"] == 0
    assert [s["name"] for s in report["streams"]] == ["cam1", "cam2"]
    for stream, n in zip(report["streams"], (150, 125)):
        frames = stream["frames"]
        assert stream["kind"] == "live"
        assert frames["captured"] == frames["shown"] == n and frames["dropped"] == frames["not_shown_at_exit"] == 0
        assert frames["inferred"] + frames["skipped"] + frames["failed"] == n
        assert stream["reconnects"] == 0
        assert stream["frame_age_ms"]["p50"] is not None and stream["frame_age_ms"]["p50"] >= 0
    [server] = report["servers"]  # answers the run stopped waiting for are not in the streams' counts
    assert server["url"] == server_empty.grpc_url
    assert server["frames"] >= sum(s["frames"]["inferred"] for s in report["streams"]) > 0


def test_render_summary(tmp_path, server_v2):
    clip = write_clip(tmp_path / "in.mp4", 6)
    log = tmp_path / "run.jsonl"
    assert streamer("run", clip, "--detections", log, "--triton", server_v2.grpc_url).returncode == 0
    summary = tmp_path / "summary.json"
    result = streamer("render", clip, "--detections", log, "--out", tmp_path / "again.mp4", "--summary", summary)
    assert result.returncode == 0, result.stderr
    assert "rendered 6 frame(s)" in result.stdout
    report = json.loads(summary.read_text())
    assert report["command"] == "render" and report["model"] is None and report["servers"] == []
    assert report["streams"][0]["frames"] == {"read": 6, "inferred": 6, "written": 6, "failed": 0, "dropped": 0,
                                           "tracked": 0}
