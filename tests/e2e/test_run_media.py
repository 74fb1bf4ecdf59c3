"""`streamer run` / `detect` on real-world-like media against a real Triton server."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from ..helpers import read_jsonl, streamer
from ..media_inputs import Audio, make_input, read_back

pytestmark = pytest.mark.slow


def test_phone_clip_runs_upright_with_its_sound_and_boxes_in_upright_pixels(tmp_path, server_v2):
    clip = make_input(tmp_path / "phone.mp4", count=6, rotation=90, audio=[Audio("aac")])
    out, jsonl = tmp_path / "out.mp4", tmp_path / "run.jsonl"
    result = streamer("run", clip, "--out", out, "--detections", jsonl, "--triton", server_v2.grpc_url)
    assert result.returncode == 0, result.stderr
    assert "150x200 h264" in result.stderr and "rotated 90° to upright" in result.stderr
    assert "audio: aac 48 kHz stereo, copied" in result.stderr

    src, dst = read_back(clip), read_back(out)
    assert (dst.width, dst.height, dst.rotation) == (150, 200, 0) and len(dst.images) == 6
    assert dst.audio[0]["codec"] == "aac"
    assert dst.audio[0]["seconds"] == pytest.approx(src.audio[0]["seconds"], abs=dst.audio[0]["frame"])
    records = read_jsonl(jsonl)
    boxes = np.array([d["box"] for r in records for d in r["detections"]])
    assert len(boxes) and records[0]["size"] == [150, 200]
    assert boxes[:, [0, 2]].max() <= 150 and boxes[:, [1, 3]].max() <= 200  # upright frame coordinates


def test_late_ts_keeps_source_time_in_the_log_and_no_audio_drops_the_sound(tmp_path, server_empty):
    clip = make_input(tmp_path / "late.ts", count=30, format="mpegts", video_start=1.4,
                      audio=[Audio("aac", start=1.4)])
    out, jsonl = tmp_path / "out.mp4", tmp_path / "run.jsonl"
    result = streamer("run", clip, "--out", out, "--detections", jsonl, "--max-frames", "12",
                      "--triton", server_empty.grpc_url)
    assert result.returncode == 0, result.stderr
    records = read_jsonl(jsonl)
    assert records[0]["time"] == pytest.approx(1.4, abs=1e-3)  # the source's own clock
    assert records[0]["pts"] == 126000 and records[0]["time_base"] == "1/90000"
    src, dst = read_back(clip), read_back(out)
    assert dst.codes == list(range(12))
    assert dst.audio[0]["start"] - dst.video_start == pytest.approx(src.audio[0]["start"] - src.video_start,
                                                                    abs=2e-3)
    audio_end = dst.audio[0]["start"] + dst.audio[0]["seconds"]
    assert audio_end == pytest.approx(dst.video_start + 12 / 30, abs=dst.audio[0]["frame"])  # cut with the video

    silent = tmp_path / "silent.mp4"
    result = streamer("run", clip, "--out", silent, "--no-audio", "--triton", server_empty.grpc_url)
    assert result.returncode == 0, result.stderr
    assert "audio: dropped (--no-audio)" in result.stderr
    assert read_back(silent).audio == [] and read_back(silent).codes == list(range(30))


def _jpeg_with_exif_orientation(path, image_rgb, orientation: int):
    """A JPEG whose EXIF says `orientation` (hand-made APP1 segment: one IFD0 entry, tag 0x0112)."""
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    app1 = b"Exif\x00\x00" + tiff
    segment = b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1
    data = jpeg.tobytes()
    path.write_bytes(data[:2] + segment + data[2:])  # right after SOI
    return path


def test_detect_follows_exif_orientation(tmp_path, server_empty):
    from ..helpers import frame_image

    stored = frame_image(5, 200, 150)
    photo = _jpeg_with_exif_orientation(tmp_path / "photo.jpg", stored, 6)  # 6: show rotated 90° clockwise
    out = tmp_path / "annotated.png"
    result = streamer("detect", photo, "--out", out, "--triton", server_empty.grpc_url)
    assert result.returncode == 0, result.stderr
    assert "150x200" in result.stdout  # upright size, as the model saw it
    annotated = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    assert annotated.shape[:2] == (200, 150)
    assert np.abs(annotated.astype(int) - np.rot90(stored, -1)).mean() < 6  # JPEG noise only
