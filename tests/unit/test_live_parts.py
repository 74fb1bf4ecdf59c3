"""Live building blocks: source specs and credential masking, backoff, the keep-latest slot,
the drop-oldest queue, the HUD, and the capture loop (reconnects, giving up) driven by
real OpenCV reading a real clip through the webcam reader (no camera exists here)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from streamer.states import CaptureState, SourceKind
from streamer.capture import CaptureSettings, LiveCapture, WebcamReader, backoff_delays
from streamer.errors import SourceError
from streamer.frame_queue import FrameQueue, LatestSlot
from streamer.render import draw_hud
from streamer.sources import SourceSpec, classify_source, mask_url, scrub

from ..helpers import read_code, wait_until, write_clip


# -- specs and credentials --------------------------------------------------------------------------

def test_classify_webcams_streams_and_files(tmp_path):
    clip = write_clip(tmp_path / "c.mp4", 3)
    assert classify_source("0") == SourceSpec(SourceKind.WEBCAM, "0", "webcam 0")
    assert classify_source("/dev/video2").kind is SourceKind.WEBCAM
    spec = classify_source("rtsp://admin:hunter2@cam.local:554/stream1")
    assert spec.kind is SourceKind.NETWORK and spec.live
    assert spec.name == "rtsp://***@cam.local:554/stream1"
    assert classify_source("https://example.com/live.m3u8").kind is SourceKind.NETWORK
    assert classify_source(str(clip)) == SourceSpec(SourceKind.FILE, str(clip), str(clip))
    assert not classify_source(str(clip)).live


def test_unsupported_scheme_names_the_options_and_masks_the_password():
    with pytest.raises(SourceError) as err:
        classify_source("ftp://bob:pw123@host/video.mp4")
    assert "pw123" not in str(err.value) and "ftp://***@host/video.mp4" in str(err.value)
    assert "rtsp" in str(err.value) and "webcam" in str(err.value)


def test_scrub_masks_every_url_with_credentials():
    text = "could not open 'rtsp://u:p@h/a' nor rtsps://user@h2:322/b, but http://h3/c is fine"
    assert scrub(text) == "could not open 'rtsp://***@h/a' nor rtsps://***@h2:322/b, but http://h3/c is fine"
    assert mask_url("rtsp://h/x") == "rtsp://h/x"


# -- backoff --------------------------------------------------------------------------------------

def test_backoff_grows_exponentially_to_a_cap_with_jitter():
    delays = backoff_delays(0.5, 8.0, random.Random(1))
    got = [next(delays) for _ in range(8)]
    nominal = [0.5, 1, 2, 4, 8, 8, 8, 8]
    for d, n in zip(got, nominal):
        assert 0.75 * n <= d <= 1.25 * n
    assert len(set(got[4:])) == 4, "jitter: capped delays still differ"
    other = backoff_delays(0.5, 8.0, random.Random(2))
    assert [next(other) for _ in range(8)] != got


# -- hand-offs ------------------------------------------------------------------------------------

def test_latest_slot_keeps_only_the_newest_and_counts_the_rest():
    slot: LatestSlot[int] = LatestSlot()
    slot.put(1)
    slot.put(2)
    slot.put(3)
    assert slot.get(timeout=1) == 3
    assert slot.skipped == 2
    slot.put(4)
    slot.close()
    assert slot.get(timeout=1) is None
    assert slot.skipped == 3  # the one left when it closed
    slot.put(5)  # after close: never taken, so counted
    assert slot.skipped == 4


def test_latest_slot_get_waits_for_a_put_and_wakes_on_close():
    slot: LatestSlot[int] = LatestSlot()
    got = []
    reader = threading.Thread(target=lambda: got.append(slot.get(timeout=10)))
    reader.start()
    time.sleep(0.1)
    slot.put(7)
    reader.join(5)
    assert got == [7]
    waiter = threading.Thread(target=lambda: got.append(slot.get(timeout=10)))
    waiter.start()
    slot.close()
    waiter.join(5)
    assert not waiter.is_alive() and got == [7, None]


def test_put_latest_never_blocks_and_drops_the_oldest():
    queue: FrameQueue[int] = FrameQueue(2)
    assert queue.put_latest(1) is None
    assert queue.put_latest(2) is None
    assert queue.put_latest(3) == 1
    assert [queue.get(timeout=1), queue.get(timeout=1)] == [2, 3]


# -- HUD -----------------------------------------------------------------------------------------

def test_hud_draws_on_a_copy_with_panel_and_banner():
    image = np.full((240, 320, 3), 200, np.uint8)
    out = draw_hud(image, ["display 25.0 fps", "camera live"], banner="OFFLINE - reconnecting (3 s)")
    assert (image == 200).all(), "drawn in place"
    assert out[5:30, 5:60].mean() < 150  # darkened panel (with some text)
    band = out[90:150].astype(int)
    red_rows = ((band[..., 0] > 150) & (band[..., 2] < 80)).mean(axis=1)
    assert red_rows.max() > 0.95  # a red banner across the middle
    assert (draw_hud(image, []) == image).all()


def test_hud_text_fits_a_small_frame():
    image = np.zeros((120, 160, 3), np.uint8)
    out = draw_hud(image, ["display 25.0 fps | source 25.0 fps (nominal 25.0)"])
    assert (out > 200).sum() > 50  # the text is there
    assert (out[:, -3:] > 200).sum() == 0  # shrunk to fit: not cut off at the right edge


# -- capture loop ---------------------------------------------------------------------------------

class FlakyReader:
    """Delivers `per_session` frames per connection; opens fail once `fail_after` sessions were served."""

    finite = False

    def __init__(self, per_session: int, fail_after: int):
        self.per_session = per_session
        self.fail_after = fail_after
        self.sessions = 0
        self.rate = None
        self.size = None

    def open(self) -> None:
        if self.sessions >= self.fail_after:
            raise SourceError("connection refused")
        self.sessions += 1

    def images(self):
        for _ in range(self.per_session):
            yield np.zeros((4, 4, 3), np.uint8)

    def close(self) -> None:
        pass


def capture(reader, settings: CaptureSettings) -> LiveCapture:
    return LiveCapture(SourceSpec(SourceKind.NETWORK, "rtsp://u:pw@h/x", "rtsp://***@h/x"), reader, settings,
                       log=lambda message: None, seed=0)


def test_capture_reconnects_then_gives_up_with_a_clear_error():
    frames: list = []
    settings = CaptureSettings(max_reconnect_time=1.0, backoff_initial=0.05, backoff_max=0.2)
    cap = capture(FlakyReader(per_session=5, fail_after=3), settings)
    cap.connect()
    cap.start(frames.append)
    cap.join(timeout=30)
    assert not cap.running
    assert len(frames) == 15 and [f.index for f in frames] == list(range(15))
    assert all(b.pts >= a.pts for a, b in zip(frames, frames[1:]))  # wall-clock stamps keep going
    assert frames[5].pts - frames[4].pts >= 0.03 * 90000  # the time offline is in the stamps
    assert cap.reconnects == 2
    assert cap.state is CaptureState.FAILED
    assert str(cap.error) == ("rtsp://***@h/x did not come back within 1 s (--max-reconnect-time); "
                              "last error: connection refused")
    assert cap.offline_seconds >= 1.0


def test_capture_stops_promptly_while_reconnecting():
    settings = CaptureSettings(max_reconnect_time=600, backoff_initial=5, backoff_max=5)
    cap = capture(FlakyReader(per_session=1, fail_after=1), settings)
    cap.connect()
    cap.start(lambda frame: None)
    wait_until(lambda: cap.state is CaptureState.OFFLINE, 10, what="offline")
    started = time.monotonic()
    cap.stop()
    cap.join(timeout=10)
    assert not cap.running and time.monotonic() - started < 5
    assert cap.error is None


def test_webcam_reader_through_real_opencv_on_a_clip(tmp_path):
    """No camera exists here: OpenCV's own capture reads a clip through the same reader."""
    clip = write_clip(tmp_path / "cam.mp4", 12, 200, 150)
    frames: list = []
    spec = SourceSpec(SourceKind.WEBCAM, str(clip), "webcam test")
    cap = LiveCapture(spec, WebcamReader(spec, CaptureSettings(backoff_initial=0.05)), CaptureSettings(
        backoff_initial=0.05, backoff_max=0.1), log=lambda m: None)
    cap.connect()
    assert cap.reader.rate is not None and float(cap.reader.rate) == pytest.approx(29.97, abs=0.01)
    cap.start(frames.append)
    wait_until(lambda: len(frames) >= 20, 30, what="frames after a reconnect")
    cap.stop()
    cap.join(timeout=10)
    codes = [read_code(f.image) for f in frames[:20]]
    assert codes == list(range(12)) + list(range(8))  # the end of the "device" -> reopened
    assert cap.reconnects >= 1


def test_webcam_that_cannot_open_says_what_to_check():
    class Closed:
        def isOpened(self):
            return False

        def release(self):
            pass

    reader = WebcamReader(SourceSpec(SourceKind.WEBCAM, "3", "webcam 3"), CaptureSettings(), opener=lambda target: Closed())
    with pytest.raises(SourceError, match="cannot open webcam 3: no such camera, or it is busy"):
        reader.open()


def test_no_such_webcam_is_a_clear_cli_error(tmp_path):
    from ..helpers import streamer

    missing = next(f"/dev/video{i}" for i in range(40, 99) if not Path(f"/dev/video{i}").exists())
    result = streamer("run", missing, timeout=60)
    assert result.returncode == 3
    assert f"cannot open webcam {missing}" in result.stderr
    assert "Traceback" not in result.stderr
