"""`streamer watch --web` with real RTSP cameras on loopback, looked at in a real Chromium.

test_web_browser.py drives the page from a scripted feed (8 cameras, frame codes, latency); here the
real command feeds it: a tile per camera, pictures advancing on every canvas, a camera stopped
shows OFFLINE on its own tile and comes back, and the camera URLs (with a password) never reach
the page.
"""

from __future__ import annotations

import pytest

from streamer.server import free_port

from ..browser import chromium, missing
from ..cameras import RtspCamera, Run, camera_clip
from ..helpers import wait_until

pytestmark = pytest.mark.slow

# Per tile: its name, its state badge, and a checksum of the picture its canvas shows now.
TILES_JS = r"""
return Array.from(document.querySelectorAll("#grid .tile")).map((tile) => {
  const canvas = tile.querySelector("canvas");
  let sum = null;
  if (canvas.width && canvas.height) {
    const data = canvas.getContext("2d", {willReadFrequently: true}).getImageData(0, 0, canvas.width,
                                                                                  canvas.height).data;
    sum = 0;
    for (let i = 0; i < data.length; i += 97) sum = (sum * 31 + data[i]) % 1000000007;
  }
  return {name: tile.dataset.camera, badge: tile.querySelector(".badge").textContent, sum: sum};
});
"""

NAMES = ["cam1", "cam2", "cam3"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return camera_clip(tmp_path_factory.mktemp("web_cameras") / "camera.mp4", 500)  # 20 s at 25 fps


def test_watch_page_shows_every_real_camera_and_one_going_offline(clip, server_empty):
    assert missing() is None, missing()
    cameras = [RtspCamera(clip, path=f"/cam{i}", user="admin", password="s3cret").start() for i in range(3)]
    port = free_port("127.0.0.1")
    run = Run("watch", *[cam.url for cam in cameras], "--web", f"127.0.0.1:{port}", "--triton",
              server_empty.grpc_url, "--status-every", "0")
    driver = chromium()
    try:
        run.wait_for(f"web view: http://127.0.0.1:{port}/", timeout=120)
        driver.get(f"http://127.0.0.1:{port}/")

        def tiles():
            return {t["name"]: t for t in driver.execute_script(TILES_JS)}

        wait_until(lambda: sorted(tiles()) == NAMES and all(t["badge"] == "UP" and t["sum"] is not None
                                                            for t in tiles().values()), 60, 0.2,
                   "a tile per camera, every one up with a picture")
        first = {name: t["sum"] for name, t in tiles().items()}
        wait_until(lambda: all(t["sum"] != first[name] for name, t in tiles().items()), 60, 0.2,
                   "every camera's picture to advance")
        assert "s3cret" not in driver.page_source

        cameras[1].stop()
        wait_until(lambda: tiles()["cam2"]["badge"] == "OFFLINE", 60, 0.2, "cam2's tile to show OFFLINE")
        assert tiles()["cam1"]["badge"] == tiles()["cam3"]["badge"] == "UP"
        cameras[1].start()
        wait_until(lambda: tiles()["cam2"]["badge"] == "UP", 90, 0.2, "cam2 to come back on its tile")
        assert "s3cret" not in driver.page_source
        run.proc.terminate()  # SIGTERM: the run ends cleanly, its shared memory removed
        assert run.finish(timeout=90) == 130, run.stderr
    finally:
        driver.quit()
        run.kill()
        for cam in cameras:
            cam.stop()
