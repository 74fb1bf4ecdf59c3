"""Real-world media through the file source and the mp4 sink (no server needed): files are
written with PyAV, passed through FileSource -> Mp4Sink as `run` does, and read back."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.states import SourceKind
from streamer.capture import CaptureSettings, NetworkReader
from streamer.media import Orientation, display_matrix
from streamer.sinks import Mp4Sink
from streamer.sources import FileSource, SourceSpec

from ..helpers import frame_image, read_code
from ..media_inputs import Audio, make_input, read_back

DURATION = 1.0  # seconds of the 30-frame default clip


def through(src_path: Path, out: Path, audio: bool = True, max_frames=None, log=None):
    """FileSource -> Mp4Sink exactly as `run` wires them (frames unannotated). Returns (frames, info)."""
    messages = log if log is not None else []
    frames = []
    with FileSource(src_path, audio=audio, log=messages.append) as src:
        with Mp4Sink.for_file(src.info, src.audio_tracks, out, messages.append) as sink:
            for frame in src.frames():
                if max_frames is not None and frame.index >= max_frames:
                    break
                frames.append(frame)
                sink.write(frame, frame.image, None)
        return frames, src.info


def offsets(readback):
    """Audio start minus video start, per audio track (seconds)."""
    return [a["start"] - readback.video_start for a in readback.audio]


def upright_codes(images, k):
    return [read_code(np.rot90(img, -k)) for img in images]


@pytest.mark.parametrize("rotation", [90, 270])
def test_rotated_phone_clip_comes_out_upright_with_its_sound(rotation, tmp_path):
    clip = make_input(tmp_path / "phone.mp4", rotation=rotation, audio=[Audio("aac")])
    src = read_back(clip)
    assert src.rotation % 360 == rotation

    frames, info = through(clip, tmp_path / "out.mp4")
    out = read_back(tmp_path / "out.mp4")

    k = rotation // 90
    assert (out.width, out.height) == (src.height, src.width)  # size swapped
    assert out.rotation == 0  # no flag: the pixels are upright
    assert "rotated" in info.describe() and f"{rotation}°" in info.describe()
    expected = np.rot90(src.images[5], k)
    assert np.abs(out.images[5].astype(int) - expected).mean() < 6  # encoder noise only
    assert upright_codes(out.images, k) == list(range(30))
    assert frames[0].image.shape[:2] == (src.width, src.height)  # the model sees upright frames too
    assert out.audio[0]["codec"] == "aac"
    assert out.audio[0]["seconds"] == pytest.approx(src.audio[0]["seconds"], abs=out.audio[0]["frame"])
    assert offsets(out) == pytest.approx(offsets(src), abs=1e-3)


@pytest.mark.parametrize("rotation,hflip,vflip", [(0, True, False), (0, False, True), (90, True, False),
                                                  (180, False, False), (270, False, True)])
def test_flips_in_the_display_matrix_follow_pyav_semantics(rotation, hflip, vflip, tmp_path):
    """PyAV documents set_display_rotation(deg, hflip, vflip) as: rotate counter-clockwise, then mirror."""
    path = tmp_path / "m.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 200, 150, "yuv420p"
        stream.set_display_rotation(rotation, hflip=hflip, vflip=vflip)
        frame = av.VideoFrame.from_ndarray(frame_image(3), format="rgb24")
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with av.open(str(path)) as container:
        vframe = next(container.decode(video=0))
    orientation, warning = Orientation.from_matrix(display_matrix(vframe))
    stored = vframe.to_ndarray(format="rgb24")
    expected = np.rot90(stored, rotation // 90)
    if hflip:
        expected = expected[:, ::-1]
    if vflip:
        expected = expected[::-1]
    assert warning is None
    assert np.array_equal(orientation.apply(stored), expected)


def test_a_rotation_that_is_not_a_multiple_of_90_keeps_the_pixels_with_one_warning(tmp_path):
    clip = make_input(tmp_path / "tilted.mp4", rotation=45)
    log = []
    frames, info = through(clip, tmp_path / "out.mp4", log=log)
    out = read_back(tmp_path / "out.mp4")
    assert (out.width, out.height) == (200, 150) and out.codes == list(range(30))
    assert info.orientation.identity
    warnings = [m for m in log if "45°" in m]
    assert len(warnings) == 1 and "stored pixels are kept" in warnings[0]


@pytest.mark.parametrize("name,audio,codec", [
    ("aac.mp4", Audio("aac"), "aac"),
    ("mp3.mkv", Audio("libmp3lame", rate=44100), "mp3"),
    ("pcm.mkv", Audio("pcm_s16le"), "aac"),
    ("alaw.mov", Audio("pcm_alaw", rate=8000, layout="mono"), "aac"),
])
def test_audio_is_copied_or_transcoded_to_aac_with_its_length(name, audio, codec, tmp_path):
    clip = make_input(tmp_path / name, audio=[audio])
    src = read_back(clip)
    _, info = through(clip, tmp_path / "out.mp4")
    out = read_back(tmp_path / "out.mp4")
    assert out.codes == list(range(30))
    assert [a["codec"] for a in out.audio] == [codec]
    assert out.audio[0]["rate"] == src.audio[0]["rate"]
    assert out.audio[0]["channels"] == src.audio[0]["channels"]
    assert out.audio[0]["seconds"] == pytest.approx(src.audio[0]["seconds"], abs=out.audio[0]["frame"])
    assert offsets(out) == pytest.approx(offsets(src), abs=out.audio[0]["frame"])
    assert ("copied" if codec == src.audio[0]["codec"] else "to aac") in info.audio


def test_every_audio_stream_is_kept(tmp_path):
    clip = make_input(tmp_path / "two.mkv", audio=[Audio("aac"), Audio("pcm_s16le", rate=44100, layout="mono")])
    _, info = through(clip, tmp_path / "out.mp4")
    out = read_back(tmp_path / "out.mp4")
    assert [(a["codec"], a["rate"], a["channels"]) for a in out.audio] == [("aac", 48000, 2), ("aac", 44100, 1)]
    assert info.audio == "audio: aac 48 kHz stereo, copied; pcm_s16le 44.1 kHz mono, to aac"


@pytest.mark.parametrize("case", ["ts-late-start", "ts-audio-earlier", "mkv-audio-first", "mp4-audio-later"])
def test_the_audio_video_start_offset_is_kept(case, tmp_path):
    if case == "ts-late-start":  # both tracks start 1.4 s in
        clip = make_input(tmp_path / "late.ts", format="mpegts", video_start=1.4, audio=[Audio("aac", start=1.4)])
    elif case == "ts-audio-earlier":
        clip = make_input(tmp_path / "late.ts", format="mpegts", video_start=1.4, audio=[Audio("mp2", start=1.2)])
    elif case == "mkv-audio-first":
        clip = make_input(tmp_path / "first.mkv", video_start=0.5, audio=[Audio("aac", start=0.0)])
    else:
        clip = make_input(tmp_path / "later.mp4", audio=[Audio("aac", start=0.3, seconds=0.5)])
    src = read_back(clip)
    frames, _ = through(clip, tmp_path / "out.mp4")
    out = read_back(tmp_path / "out.mp4")
    assert out.codes == list(range(30))
    assert offsets(out) == pytest.approx(offsets(src), abs=2e-3)
    assert out.audio[0]["seconds"] == pytest.approx(src.audio[0]["seconds"], abs=out.audio[0]["frame"])
    # the frames (and so the JSONL) keep the source's own clock
    assert frames[0].time == pytest.approx(src.video_start, abs=1e-6)
    if case.startswith("ts"):
        assert frames[0].time == pytest.approx(1.4, abs=1e-3)


def test_max_frames_cuts_the_audio_at_the_end_of_the_last_frame(tmp_path):
    clip = make_input(tmp_path / "long.mp4", count=60, audio=[Audio("aac"), Audio("pcm_s16le")], format="mov")
    through(clip, tmp_path / "out.mp4", max_frames=20)
    out = read_back(tmp_path / "out.mp4")
    assert out.codes == list(range(20))
    for track in out.audio:
        assert track["seconds"] == pytest.approx(20 / 30, abs=track["frame"])


def test_no_audio_drops_it(tmp_path):
    clip = make_input(tmp_path / "aac.mp4", audio=[Audio("aac")])
    _, info = through(clip, tmp_path / "out.mp4", audio=False)
    assert read_back(tmp_path / "out.mp4").audio == []
    assert info.audio == "audio: dropped (--no-audio)"


def test_an_undecodable_audio_stream_costs_no_frame(tmp_path):
    clip = make_input(tmp_path / "mp2.mkv", audio=[Audio("mp2")])
    broken = tmp_path / "broken.mkv"
    rng = np.random.default_rng(0)
    with av.open(str(clip)) as inp, av.open(str(broken), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.size == 0:
                continue
            target = streams[packet.stream.index]
            if packet.stream.type == "audio":
                garbage = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
                garbage.pts, garbage.dts, garbage.time_base = packet.pts, packet.dts, packet.time_base
                packet = garbage
            packet.stream = target
            out.mux(packet)
    log = []
    through(broken, tmp_path / "out.mp4", log=log)
    out = read_back(tmp_path / "out.mp4")
    assert out.codes == list(range(30))
    assert out.audio == []
    assert len([m for m in log if "audio stream" in m]) == 1, log


def test_anamorphic_pixels_keep_their_shape(tmp_path):
    clip = make_input(tmp_path / "dv.mp4", sar=Fraction(4, 3))
    _, info = through(clip, tmp_path / "out.mp4")
    out = read_back(tmp_path / "out.mp4")
    assert out.sar == Fraction(4, 3) and out.codes == list(range(30))
    assert "SAR 4:3" in info.describe()


def test_anamorphic_and_rotated_inverts_the_sar(tmp_path):
    clip = make_input(tmp_path / "dv.mp4", sar=Fraction(4, 3), rotation=90)
    through(clip, tmp_path / "out.mp4")
    out = read_back(tmp_path / "out.mp4")
    assert out.sar == Fraction(3, 4) and (out.width, out.height) == (150, 200)


@pytest.mark.parametrize("name,vcodec,pix_fmt,colour", [
    ("mjpeg.mkv", "mjpeg", "yuvj420p", (2, 5, 2, 2)),  # full-range JPEG, BT.601 matrix
    ("bt709.mp4", "libx264", "yuv420p", (1, 1, 1, 1)),
    ("bt601.mp4", "libx264", "yuv420p", (1, 6, 6, 6)),
])
def test_colour_tags_are_carried_and_the_picture_keeps_its_colours(name, vcodec, pix_fmt, colour, tmp_path):
    clip = make_input(tmp_path / name, vcodec=vcodec, pix_fmt=pix_fmt, colour=colour)
    src = read_back(clip)
    assert src.colour == colour
    through(clip, tmp_path / "out.mp4")
    out = read_back(tmp_path / "out.mp4")
    assert out.colour == colour
    assert out.codes == list(range(30))
    assert np.abs(out.images[7].astype(int) - src.images[7]).mean() < 4  # same colours (within noise)


@pytest.mark.parametrize("trc,kind", [(18, "HLG"), (16, "PQ")])
def test_hdr_is_tone_mapped_to_sdr_bt709(trc, kind, tmp_path):
    """10-bit HEVC (libx265) tagged BT.2020 + HLG (an iPhone's default) or PQ (HDR10)."""
    clip = make_input(tmp_path / "hdr.mp4", vcodec="libx265", pix_fmt="yuv420p10le", colour=(1, 9, 9, trc),
                      vopts={"x265-params": "log-level=error"})
    src = read_back(clip)
    assert src.colour == (1, 9, 9, trc)
    frames, info = through(clip, tmp_path / "out.mp4")
    out = read_back(tmp_path / "out.mp4")
    assert out.colour == (1, 1, 1, 1)  # honest SDR BT.709 tags on converted pixels
    assert out.codes == list(range(30))
    assert f"{kind} HDR" in info.describe() and "SDR BT.709" in info.describe()
    # the conversion really happened: the picture differs from a plain (untone-mapped) decode
    plain = src.images[4]
    assert np.abs(frames[4].image.astype(int) - plain).mean() > 3


def test_a_live_stream_that_signals_a_rotation_is_turned_upright(tmp_path):
    clip = make_input(tmp_path / "cam.mp4", rotation=90, count=5)
    reader = NetworkReader(SourceSpec(SourceKind.NETWORK, str(clip), "cam"), CaptureSettings())
    reader.open()
    try:
        images = list(reader.images())
    finally:
        reader.close()
    assert reader.size == (150, 200)
    assert [img.shape[:2] for img in images] == [(200, 150)] * 5
    assert upright_codes(images, 1) == list(range(5))
