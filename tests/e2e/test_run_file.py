"""`streamer run` on real clips against a real Triton server; outputs read back with PyAV."""

from __future__ import annotations

import re
from fractions import Fraction

import numpy as np
import pytest

from ..helpers import (frame_image, moov_before_mdat, read_jsonl, read_video, streamer, write_clip)

pytestmark = pytest.mark.slow


def accounting(stdout: str) -> dict:
    match = re.search(r"frames: read (\d+), inferred (\d+), written (\d+), failed (\d+)", stdout)
    assert match, stdout
    return dict(zip(("read", "inferred", "written", "failed"), map(int, match.groups())))


def assert_same_timing(src, out):
    assert len(out.pts) == len(src.pts)
    assert np.allclose(out.times, src.times, atol=1e-4), (out.times[:5], src.times[:5])
    assert out.duration == pytest.approx(src.duration, abs=1e-3)


@pytest.mark.parametrize("case", ["29.97fps", "vfr", "odd-size", "in-flight-4", "seed-grpc"])
def test_output_has_every_frame_in_order_with_source_timing(case, tmp_path, server_empty):
    clip = tmp_path / "in.mp4"
    width, height, in_flight, path = 200, 150, "2", ()
    if case == "29.97fps":
        write_clip(clip, 90, rate=Fraction(30000, 1001))
    elif case == "vfr":
        pts = np.cumsum([0] + [1 + (i * 7) % 5 for i in range(44)]).tolist()
        write_clip(clip, 45, rate=Fraction(25), pts=pts, time_base=Fraction(1, 50))
    elif case == "odd-size":
        width, height = 201, 151
        write_clip(clip, 30, width=width, height=height)
    elif case == "in-flight-4":
        in_flight = "4"
        write_clip(clip, 60)
    else:  # the seed's model and transport, chosen by hand
        path = ("--model", "fasterrcnn", "--transport", "grpc")
        write_clip(clip, 60)
    out = tmp_path / "out.mp4"

    result = streamer("run", clip, "--out", out, "--triton", server_empty.grpc_url, "--in-flight", in_flight,
                      *path)

    assert result.returncode == 0, result.stderr
    assert ("over grpc" if path else "over shm") in result.stderr
    src, dst = read_video(clip), read_video(out)
    n = len(src.pts)
    assert dst.codes == list(range(n))  # none missing, none repeated, in order
    assert accounting(result.stdout) == {"read": n, "inferred": n, "written": n, "failed": 0}
    assert_same_timing(src, dst)
    assert (dst.codec, dst.pix_fmt) == ("h264", "yuv420p")
    assert moov_before_mdat(out)
    assert (dst.width, dst.height) == (width + width % 2, height + height % 2)
    if src.average_rate and case != "vfr":
        assert dst.average_rate == src.average_rate


def test_boxes_on_frame_k_are_the_detections_of_frame_k(tmp_path, server_v2, repo_v2):
    import torch

    from streamer.export import load_scripted
    from streamer.frames import Detections
    from streamer.render import draw_detections
    from streamer.triton import to_input

    clip = write_clip(tmp_path / "in.mp4", 8)
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    # --no-track: the model's boxes exactly as today (no ids in the labels, colours by class)
    result = streamer("run", clip, "--out", out, "--detections", jsonl, "--triton", server_v2.grpc_url,
                      "--in-flight", "3", "--no-track")
    assert result.returncode == 0, result.stderr

    records = read_jsonl(jsonl)
    assert [r["frame"] for r in records] == list(range(8))
    assert all("track_id" not in d for r in records for d in r["detections"])
    src, dst = read_video(clip), read_video(out)
    torch.set_num_threads(2)
    model = load_scripted(repo_v2 / "fasterrcnn" / "1" / "model.pt")
    expected = []
    for k, image in enumerate(src.images):
        with torch.inference_mode():
            boxes, labels, scores = model(torch.from_numpy(to_input(image)))
        keep = scores.numpy() >= 0.5
        dets = Detections(boxes.numpy()[keep], labels.numpy()[keep], scores.numpy()[keep])
        expected.append(dets)
        got = records[k]["detections"]
        assert records[k]["status"] == "ok"
        assert len(got) == len(dets) > 0, k
        # The run used fasterrcnn_u8 (batched, resize-first arithmetic): the same detections within
        # the tolerance, in any order among near-equal scores.
        unmatched = list(range(len(dets)))
        for d in got:
            j = next((j for j in unmatched if dets.labels[j] == d["label"]
                      and abs(dets.scores[j] - d["score"]) <= 2e-3
                      and np.abs(dets.boxes[j] - np.array(d["box"], np.float32)).max() <= 0.5), None)
            assert j is not None, f"frame {k}: {d} is not one of its detections"
            unmatched.remove(j)

    # The drawn frame k matches frame k's detections better than its neighbours'.
    for k in range(1, 7):
        def distance(dets):
            drawn = draw_detections(src.images[k], dets, lambda label: _name(records, label))
            return np.abs(drawn.astype(np.int16) - dst.images[k].astype(np.int16)).mean()

        own = distance(expected[k])
        assert own < distance(expected[k - 1]) and own < distance(expected[k + 1]), k


def _name(records, label):
    for record in records:
        for d in record["detections"]:
            if d["label"] == label:
                return d["name"]
    return f"class {label}"


def test_jsonl_records_every_frame_with_time(tmp_path, server_empty):
    clip = write_clip(tmp_path / "in.mp4", 12, rate=Fraction(30000, 1001))
    jsonl = tmp_path / "d.jsonl"
    result = streamer("run", clip, "--detections", jsonl, "--triton", server_empty.grpc_url)
    assert result.returncode == 0, result.stderr
    records = read_jsonl(jsonl)
    assert [r["frame"] for r in records] == list(range(12))
    assert [r["pts"] for r in records] == [i * 1001 for i in range(12)]
    assert records[3]["time"] == pytest.approx(3 * 1001 / 30000, abs=1e-6)
    assert all(r["status"] == "ok" and r["detections"] == [] for r in records)  # untrained MobileNet


def test_classes_filter_keeps_only_named_classes(tmp_path, server_v2):
    clip = write_clip(tmp_path / "in.mp4", 3)
    everything = tmp_path / "all.jsonl"
    assert streamer("run", clip, "--detections", everything, "--triton", server_v2.grpc_url).returncode == 0
    names = [d["name"] for r in read_jsonl(everything) for d in r["detections"]]
    assert len(set(names)) > 1
    common = max(set(names), key=names.count)

    only = tmp_path / "only.jsonl"
    result = streamer("run", clip, "--detections", only, "--classes", common.upper(),
                      "--triton", server_v2.grpc_url)
    assert result.returncode == 0, result.stderr
    kept = [d["name"] for r in read_jsonl(only) for d in r["detections"]]
    assert kept and set(kept) == {common} and len(kept) == names.count(common)


def test_threshold_hides_lower_scores(tmp_path, server_v2):
    clip = write_clip(tmp_path / "in.mp4", 2)
    jsonl = tmp_path / "d.jsonl"
    result = streamer("run", clip, "--detections", jsonl, "--threshold", "0.9", "--triton", server_v2.grpc_url)
    assert result.returncode == 0, result.stderr
    scores = [d["score"] for r in read_jsonl(jsonl) for d in r["detections"]]
    assert scores and min(scores) >= 0.9


def test_unknown_class_is_a_usage_error(tmp_path, server_empty):
    clip = write_clip(tmp_path / "in.mp4", 2)
    result = streamer("run", clip, "--classes", "person,unicorn", "--triton", server_empty.grpc_url)
    assert result.returncode == 2
    assert "unknown class name(s) unicorn" in result.stderr and "Traceback" not in result.stderr


def test_max_frames_stops_early(tmp_path, server_empty):
    clip = write_clip(tmp_path / "in.mp4", 30)
    out = tmp_path / "out.mp4"
    result = streamer("run", clip, "--out", out, "--max-frames", "7", "--triton", server_empty.grpc_url)
    assert result.returncode == 0, result.stderr
    assert read_video(out).codes == list(range(7))
    assert accounting(result.stdout)["written"] == 7


def test_truncated_input_writes_what_decodes_and_fails(tmp_path, server_empty):
    clip = write_clip(tmp_path / "in.mp4", 60)
    data = clip.read_bytes()
    clip.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "out.mp4"
    result = streamer("run", clip, "--out", out, "--triton", server_empty.grpc_url)
    assert result.returncode == 6, result.stderr
    assert "ended early" in result.stderr
    written = read_video(out).codes
    assert 0 < len(written) < 60 and written == list(range(len(written)))
    counts = accounting(result.stdout)
    assert counts["read"] == counts["written"] == len(written)


def test_overwrite_is_needed_to_replace_output(tmp_path, server_empty):
    clip = write_clip(tmp_path / "in.mp4", 3)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    result = streamer("run", clip, "--out", out, "--triton", server_empty.grpc_url)
    assert result.returncode == 5 and "--overwrite" in result.stderr
    assert out.read_bytes() == b"keep me"
    result = streamer("run", clip, "--out", out, "--overwrite", "--triton", server_empty.grpc_url)
    assert result.returncode == 0, result.stderr
    assert read_video(out).codes == [0, 1, 2]


def test_frame_image_helper_codes_survive_h264(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", 5, image_fn=frame_image)
    assert read_video(clip).codes == list(range(5))


def test_progress_bar_with_eta_on_a_terminal_only(tmp_path, server_paced):  # a run slow enough for an ETA
    import os
    import pty
    import subprocess

    from ..helpers import STREAMER

    clip = write_clip(tmp_path / "in.mp4", 40)
    master, slave = pty.openpty()
    proc = subprocess.Popen(STREAMER + ["run", str(clip), "--triton", server_paced.grpc_url],
                            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the terminal closed: the command is done
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    stdout, _ = proc.communicate(timeout=120)
    terminal = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, terminal
    assert "detecting" in terminal and "40/40" in terminal
    assert re.search(r"\d+/40 .*\d\d:\d\d:\d\d", terminal), terminal  # position and ETA
    assert "detecting" not in stdout.decode()

    piped = streamer("run", clip, "--triton", server_paced.grpc_url, "--max-frames", "3")
    assert piped.returncode == 0 and "detecting" not in piped.stderr  # no bar when not a terminal
