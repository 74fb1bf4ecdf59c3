"""H.264 for the page: the live encoder's fragmented MP4 (read back with PyAV, FFmpeg's own mp4
demuxer), keyframes when asked and every second, the codec string from the SPS, a viewer's queue
of pieces, and the WebSocket path (init segment once, then one media segment per picture)."""

from __future__ import annotations

import io

import av

from streamer.stages import View
from streamer.states import ViewState
from streamer.web import WebDisplay
from streamer.web.feed import MAX_BACKLOG, Piece, PieceQueue
from streamer.web.fmp4 import LiveH264, codec_string, nal_units

from ..helpers import wait_until
from ..webclient import Socket, parse_frame
from ..webfeed import FakeRun, coded_image, read_index, read_wall_ms

H264_TILE, H264_FULL, INIT = 4, 5, 0x80


def decode(data: bytes):
    with av.open(io.BytesIO(data), format="mp4") as container:
        stream = container.streams.video[0]
        return [(f.pts, f.to_ndarray(format="rgb24")) for f in container.decode(stream)]


def test_pieces_decode_in_order_with_their_codes_and_times():
    encoder = LiveH264()
    pieces = [encoder.encode(coded_image(i, 1000 + 40 * i, 640, 360), 100.0 + i / 25) for i in range(30)]
    assert all(p is not None for p in pieces)
    assert pieces[0].key and pieces[0].init and pieces[0].codec == "avc1.4D401E"  # main profile, level 3.0
    assert (pieces[0].width, pieces[0].height) == (640, 360)
    assert not any(p.key for p in pieces[1:25])  # a keyframe every second, none in between
    assert pieces[25].key and pieces[25].init == pieces[0].init
    frames = decode(pieces[0].init + b"".join(p.fragment for p in pieces))
    assert [read_index(img) for _, img in frames] == list(range(30))
    assert [read_wall_ms(img) for _, img in frames] == [1000 + 40 * i for i in range(30)]
    pts = [p for p, _ in frames]
    assert pts[0] == 0 and all(b - a == 3600 for a, b in zip(pts[1:], pts[2:]))  # 40 ms at 90 kHz


def test_a_keyframe_when_asked_and_a_new_size_restarts_the_stream():
    encoder = LiveH264(key_every_s=60)
    first = [encoder.encode(coded_image(i, 0, 320, 240), i / 10) for i in range(5)]
    encoder.want_key()
    asked = encoder.encode(coded_image(5, 0, 320, 240), 0.5)
    assert [p.key for p in first] == [True, False, False, False, False] and asked.key
    # a viewer joining at the keyframe decodes from there
    assert [read_index(img) for _, img in decode(asked.init + asked.fragment)] == [5]
    bigger = encoder.encode(coded_image(6, 0, 641, 361), 0.6)  # odd sizes are cropped to even
    assert bigger.key and (bigger.width, bigger.height) == (640, 360) and bigger.init != asked.init


def test_codec_string_and_nal_units():
    assert codec_string(bytes([0x67, 0x4D, 0x40, 0x1F])) == "avc1.4D401F"
    stream = b"\x00\x00\x00\x01\x67\x01\x02\x00\x00\x01\x68\x03\x00\x00\x01\x65\x04\x05"
    assert nal_units(stream) == [b"\x67\x01\x02", b"\x68\x03", b"\x65\x04\x05"]


def test_a_viewer_queue_restarts_at_keyframes_and_drops_a_backlog():
    key = Piece(b"k", True, b"init")
    delta = Piece(b"d", False, None)
    queue = PieceQueue()
    assert not queue.add(delta)  # nothing decodable before a keyframe
    assert queue.add(key) and queue.add(delta) and queue.add(delta)
    assert queue.add(key) and queue.take() == [key]  # a keyframe replaces what still waits
    for _ in range(MAX_BACKLOG):
        assert queue.add(delta)
    assert not queue.add(delta) and queue.take() == []  # too far behind: wait for the next keyframe
    assert not queue.add(delta) and queue.add(key)


def test_the_page_socket_carries_h264_init_then_one_segment_per_picture():
    with WebDisplay("127.0.0.1", 0) as web, FakeRun(web, ["a", "b"], fps=15, width=1280, height=720) as run:
        wait_until(lambda: run.shows >= 2, 10, 0.02, "views")
        with Socket(web.port) as sock:
            sock.send({"type": "view", "camera": None, "codec": "h264"})
            streams = {}

            def collect(kind, value):
                if kind == "binary":
                    name, code, index, payload = parse_frame(value)
                    if code == H264_TILE | INIT:
                        length = payload[0]
                        assert payload[1:1 + length].decode().startswith("avc1.")
                        assert name not in streams, "the init segment came twice"
                        streams[name] = [payload[1 + length:]]
                    elif code == H264_TILE and name in streams:
                        streams[name].append(payload)
                return len(streams) == 2 and all(len(s) > 20 for s in streams.values())

            sock.until(collect, 30, "H.264 tiles of both cameras")
            for name, segments in streams.items():
                frames = decode(b"".join(segments))
                indexes = [read_index(img) for _, img in frames]
                assert all(img.shape == (360, 640, 3) for _, img in frames)  # the tile size
                assert indexes == sorted(indexes) and len(set(indexes)) == len(indexes) == len(segments) - 1

            sock.send({"type": "view", "camera": "b", "codec": "h264"})
            full = []

            def collect_full(kind, value):
                if kind == "binary":
                    name, code, index, payload = parse_frame(value)
                    if code == H264_FULL | INIT:
                        full[:] = [payload[1 + payload[0]:]]
                    elif code == H264_FULL and full:
                        assert name == "b"
                        full.append(payload)
                return len(full) > 5

            sock.until(collect_full, 30, "the enlarged camera in H.264")
            assert all(img.shape == (720, 1280, 3) for _, img in decode(b"".join(full)))
        counts = web.encode_counts()
        assert counts[("a", "h264-tile")] > 0 and counts[("b", "h264-full")] > 0


def h264_pictures(sock: Socket, count: int, timeout: float = 20):
    """Ask for H.264 and collect the init segment and `count` pictures after it (the frame
    indexes, decoded from the segments)."""
    sock.send({"type": "view", "camera": None, "codec": "h264"})
    segments = []

    def collect(kind, value):
        if kind == "binary":
            _, code, _, payload = parse_frame(value)
            if code == H264_TILE | INIT:
                segments[:] = [payload[1 + payload[0]:]]
            elif code == H264_TILE and segments:
                segments.append(payload)
        return len(segments) > count

    sock.until(collect, timeout, f"{count} H.264 picture(s)")
    return [read_index(img) for _, img in decode(b"".join(segments))]


def test_a_new_viewer_of_a_frozen_camera_gets_its_last_picture_as_a_keyframe():
    """The stream encodes only when the picture changes: a camera that froze (or went offline)
    shows its last picture, and a viewer who comes later must get it too."""
    with WebDisplay("127.0.0.1", 0) as web:
        web.show([View("a", coded_image(7, 0, 320, 240), ViewState.UP)])  # one picture, then nothing
        with Socket(web.port) as first:
            assert h264_pictures(first, 1) == [7]
            with Socket(web.port) as second:  # the stream runs already: nothing new to encode
                assert h264_pictures(second, 1, timeout=10) == [7]
            encoder = web._on_loop(lambda: web.feed.streams[("a", "h264-tile")].encoder)
        # the last viewer left: the stream's encoder is closed (libx264's buffers freed)
        wait_until(lambda: encoder.closed, 10, 0.02, "the encoder to be closed")
        assert encoder.encode(coded_image(8, 0, 320, 240), 1.0) is None
