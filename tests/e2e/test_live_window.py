"""The --show window, for real: Xvfb, screenshots of the window (FFmpeg x11grab), keys
pressed with xdotool. Frames are identified by the index code they carry, so "the video
advances" means distinct source frames, not window refreshes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from ..cameras import RtspCamera, Run, VirtualDisplay, bottom_code_image, camera_clip, read_bottom_code
from ..helpers import inference_count, read_video, streamer, wait_until
from .test_live_rtsp import live_counts

pytestmark = pytest.mark.slow

HUD = (slice(2, 40), slice(2, 150))  # rows, cols inside the HUD panel (top-left)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return camera_clip(tmp_path_factory.mktemp("camera") / "camera.mp4", 500)


def snapshots(display: VirtualDisplay, window: str, count: int, interval: float = 0.3):
    """(code, image) of `count` screenshots of the window."""
    shots = []
    for _ in range(count):
        image = display.window_image(window)
        shots.append((read_bottom_code(image), image))
        time.sleep(interval)
    return shots


def wait_for_a_frame(display: VirtualDisplay, window: str, run: Run, code: bool = True) -> None:
    """Until the window shows a camera frame: a picture at the camera's size (before its first frame the
    window is 400x300 and grey; a window that is all black reads as code 0) with, if `code`, its index code
    readable."""
    last = {}

    def shown() -> bool:
        image = display.window_image(window)
        last.update(shape=image.shape[:2], std=round(float(image.std()), 1), code=read_bottom_code(image))
        return image.shape[:2] == (240, 320) and last["std"] > 20 and (not code or last["code"] is not None)

    display.wait_shown(window, shown, 60, what=lambda: f"a camera frame in the window (last seen: {last}; windows: "
                       f"{display.xdotool('search', '--name', 'streamer')!r}; the run's log:\n{run.stderr})")


def differs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > 60


def coarse(image: np.ndarray, block: int = 8) -> np.ndarray:
    """The picture below the HUD as means of `block` x `block` squares: encoder noise averages out, while
    consecutive frames of the camera clip still differ everywhere (its colours shift with the index)."""
    below = image[80:].astype(np.float32)
    h, w = below.shape[0] // block * block, below.shape[1] // block * block
    return below[:h, :w].reshape(h // block, block, w // block, block, -1).mean(axis=(1, 3))


def recorded_index(image: np.ndarray, recorded: np.ndarray) -> Optional[int]:
    """Which recorded frame the window shows (each frame is shown as it is recorded, with the HUD on top):
    the one whose coarse picture matches the screenshot's within encoder noise, else None. Measured: 2-2.7
    levels from the right frame, at least 9.8 from any other."""
    picture = coarse(image)
    if picture.shape != recorded.shape[1:]:  # not a frame's size: the window before its first frame
        return None
    distances = np.abs(recorded - picture).mean(axis=(1, 2, 3))
    best = int(np.argmin(distances))
    return best if distances[best] < 5 else None


def test_window_shows_boxes_and_the_hud(tmp_path, clip, server_v2):
    out = tmp_path / "rec.mp4"
    before = inference_count(server_v2.http_url)
    with VirtualDisplay() as display, RtspCamera(clip) as cam:
        run = Run("run", cam.url, "--show", "--out", out, "--triton", server_v2.grpc_url, env=display.env)
        try:
            window = display.find_window("streamer: rtsp://")
            run.wait_for(": live,")
            wait_until(lambda: inference_count(server_v2.http_url) >= before + 3, 120, what="detections to arrive")
            wait_for_a_frame(display, window, run, code=False)  # the code may lie under a label
            screenshots = snapshots(display, window, 10)
            display.press(window, "q")
            assert run.finish(timeout=60) == 0, run.stderr
        finally:
            run.kill()
    # The untrained model's boxes and filled labels land anywhere: on the index code at the bottom (which
    # then cannot be read) and on the HUD panel (which darkens them too). So each screenshot is found in
    # the recording, whose frame i is camera frame i and is what the window showed under its HUD.
    recorded = read_video(out).images
    # frame i is camera frame i: the first frames, shown before any detection arrived, say so (later codes
    # may be hidden, or misread, under labels)
    assert [read_bottom_code(img) for img in recorded[:3]] == [0, 1, 2]
    coarse_recorded = np.stack([coarse(img) for img in recorded])
    shots = []
    for _, image in screenshots:
        index = recorded_index(image, coarse_recorded)
        if index is not None:
            shots.append((index, image))
    assert shots, "no screenshot showed a recorded frame"
    boxed = 0
    for index, image in shots:
        assert image.shape[:2] == (240, 320)
        source = bottom_code_image(index)
        diff = differs(image, source)
        # the HUD: a darkened panel with bright text, top-left, over the picture as drawn (boxes and labels
        # included, as recorded)
        panel, under = image[HUD].astype(int).sum(axis=2), recorded[index][HUD].astype(int).sum(axis=2)
        bright = under > 150  # where darkening shows; the HUD text is a minority of the panel
        assert np.median(panel[bright] / under[bright]) < 0.6, "no darkened HUD panel"
        assert (image[HUD].min(axis=2) > 200).sum() > 30, "no HUD text"
        # boxes and labels drawn over the picture, outside the HUD
        body = diff[60:220]
        boxed += body.mean() > 0.01
    assert boxed >= len(shots) // 2, "boxes missing from the window"


def test_window_plays_distinct_frames_and_q_quits_cleanly(tmp_path, clip, server_empty):
    out = tmp_path / "rec.mp4"
    with VirtualDisplay() as display, RtspCamera(clip) as cam:
        run = Run("run", cam.url, "--show", "--out", out, "--triton", server_empty.grpc_url, env=display.env)
        try:
            window = display.find_window("streamer: rtsp://")
            run.wait_for(": live,")
            wait_for_a_frame(display, window, run)
            codes = []

            def played() -> bool:  # a deadline, not a fixed number of shots: a loaded machine may pause it
                codes.append(read_bottom_code(display.window_image(window)))
                readable = [c for c in codes if c is not None]
                return len(readable) >= 8 and len(set(readable)) >= 6

            display.wait_shown(window, played, 60, what="6 distinct frames in the window")
            display.press(window, "q")
            assert run.finish(timeout=60) == 0, run.stderr
        finally:
            run.kill()
    readable = [c for c in codes if c is not None]
    assert len(readable) >= 8, codes
    # distinct source frames, in capture order: the picture advances with the camera
    assert len(set(readable)) >= 6, codes
    assert readable == sorted(readable), codes
    assert "window closed by the user" in run.stderr
    counts = live_counts(run.out)
    assert counts["shown"] > 0
    assert len(read_video(out).images) == counts["shown"]


def test_show_plays_a_file_and_writes_every_frame(tmp_path, clip, server_empty):
    short = camera_clip(tmp_path / "short.mp4", 40)
    out = tmp_path / "out.mp4"
    with VirtualDisplay() as display:
        result = streamer("run", short, "--show", "--out", out, "--triton", server_empty.grpc_url,
                          env=display.env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [read_bottom_code(img) for img in read_video(out).images] == list(range(40))


def test_show_without_a_display_says_how_to_get_one(tmp_path, clip):
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = streamer("run", clip, "--show", env=env, timeout=60)
    assert result.returncode == 5
    assert "--show needs a display" in result.stderr and "xvfb-run" in result.stderr


def red_banner(image: np.ndarray) -> bool:
    """A row across the middle of the window that is almost all banner red."""
    band = image[image.shape[0] // 3: 2 * image.shape[0] // 3].astype(int)
    red = (band[..., 0] > 150) & (band[..., 1] < 80) & (band[..., 2] < 80)
    return bool(red.mean(axis=1).max() > 0.9)


def test_window_shows_offline_while_the_camera_is_gone(clip, server_empty):
    with VirtualDisplay() as display:
        cam = RtspCamera(clip).start()
        run = Run("run", cam.url, "--show", "--triton", server_empty.grpc_url, env=display.env)
        try:
            window = display.find_window("streamer: rtsp://")
            run.wait_for(": live,")
            wait_for_a_frame(display, window, run)
            assert not red_banner(display.window_image(window))
            cam.stop()
            run.wait_for("dropped", timeout=60)
            wait_until(lambda: red_banner(display.window_image(window)), 30, interval=0.25,
                       what="an OFFLINE banner while the camera is gone")
            cam.start()
            run.wait_for("is back", timeout=90)
            wait_until(lambda: not red_banner(display.window_image(window)), 30, interval=0.25,
                       what="the banner to go after the reconnect")
            display.press(window, "Escape")
            assert run.finish(timeout=60) == 0, run.stderr
        finally:
            run.kill()
            cam.stop()
    assert "reconnects 1," in run.out
