"""A real Chromium for the web view's tests: Debian's chromium + chromium-driver through selenium.

selenium-manager never downloads anything (SE_OFFLINE=true, explicit driver and binary paths);
as root Chromium needs --no-sandbox. A missing package fails with the packages to install
(`.ci/run` and `make test` install them): these tests never skip.
"""

from __future__ import annotations

import os
import shutil
from typing import List, Optional

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BROWSER_PACKAGES = "chromium chromium-driver"

# Reads the codes tests/webfeed.py draws (index along the bottom, wall-clock ms in a row two
# cells from the top) from a canvas, as tests/webfeed.read_bits does from an image.
READ_CODES_JS = r"""
window.__streamerCodes = window.__streamerCodes || (() => {
  const INDEX_BITS = 12, TIME_BITS = 32, TIME_ROW_CELLS = 2;
  function bits(data, width, count, top, cell) {
    let value = 0;
    const r = Math.max(1, Math.floor(cell / 4));
    for (let bit = 0; bit < count; bit++) {
      const cy = top + Math.floor(cell / 2), cx = bit * cell + Math.floor(cell / 2);
      let sum = 0, n = 0;
      for (let y = cy - r; y <= cy + r; y++) {
        for (let x = cx - r; x <= cx + r; x++) {
          const i = (y * width + x) * 4;
          sum += (data[i] + data[i + 1] + data[i + 2]) / 3;
          n++;
        }
      }
      const level = sum / n;
      if (level > 70 && level < 185) return null;
      if (level >= 185) value += 2 ** bit;
    }
    return value;
  }
  return (canvas) => {
    const w = canvas.width, h = canvas.height;
    if (w < 64 || h < 64) return null;
    const cell = Math.max(8, Math.floor(w / TIME_BITS));
    const data = canvas.getContext("2d").getImageData(0, 0, w, h).data;
    return {index: bits(data, w, INDEX_BITS, h - cell, cell), wall: bits(data, w, TIME_BITS, TIME_ROW_CELLS * cell, cell),
            width: w, height: h};
  };
})();
"""

TILES_JS = READ_CODES_JS + r"""
return Array.from(document.querySelectorAll("#grid .tile")).map((tile) => {
  const canvas = tile.querySelector("canvas");
  return Object.assign({name: tile.dataset.camera, badge: tile.querySelector(".badge").textContent,
                        banner: tile.querySelector(".banner").hidden ? null : tile.querySelector(".banner").textContent,
                        figures: tile.querySelector(".figures").textContent},
                       window.__streamerCodes(canvas) || {index: null, wall: null, width: canvas.width});
});
"""

BIG_JS = READ_CODES_JS + r"""
const big = document.getElementById("enlarged");
if (big.hidden) return null;
const canvas = big.querySelector("canvas");
return Object.assign({name: big.querySelector(".name").textContent, badge: big.querySelector(".badge").textContent,
                      hud: Array.from(big.querySelectorAll(".hud li")).map((li) => li.textContent),
                      detections: Array.from(big.querySelectorAll(".detections li")).map((li) => li.textContent),
                      outputs: Array.from(big.querySelectorAll(".outputs li")).map((li) => li.textContent)},
                     window.__streamerCodes(canvas) || {index: null, wall: null, width: canvas.width});
"""

# The same codes from a <video> (H.264 through MSE): the current picture drawn on a scratch canvas.
READ_VIDEO_JS = READ_CODES_JS + r"""
window.__streamerVideoCodes = window.__streamerVideoCodes || ((video) => {
  if (!video.videoWidth) return null;
  const scratch = window.__streamerScratch || (window.__streamerScratch = document.createElement("canvas"));
  scratch.width = video.videoWidth;
  scratch.height = video.videoHeight;
  scratch.getContext("2d", {willReadFrequently: true}).drawImage(video, 0, 0);
  return window.__streamerCodes(scratch);
});
"""

VIDEO_TILES_JS = READ_VIDEO_JS + r"""
return Array.from(document.querySelectorAll("#grid .tile")).map((tile) => Object.assign(
  {name: tile.dataset.camera}, window.__streamerVideoCodes(tile.querySelector("video")) || {index: null, width: 0}));
"""

BIG_VIDEO_JS = READ_VIDEO_JS + r"""
const big = document.getElementById("enlarged");
if (big.hidden) return null;
return Object.assign({name: big.querySelector(".name").textContent},
                     window.__streamerVideoCodes(big.querySelector("video")) || {index: null, width: 0});
"""

# The latency hook: on every picture a canvas draws, capture-to-canvas milliseconds from the
# wall-clock code (browser and server share the clock on one host).
LATENCY_HOOK_JS = READ_CODES_JS + r"""
window.__latency = [];
document.querySelectorAll("canvas").forEach((canvas) => canvas.addEventListener("frame", () => {
  const codes = window.__streamerCodes(canvas);
  if (codes && codes.wall !== null) window.__latency.push(((Date.now() % 2 ** 32) - codes.wall + 2 ** 32) % 2 ** 32);
}));
return true;
"""

# The same for <video> elements: the page fires "frame" on each picture a video shows
# (requestVideoFrameCallback); read the code from that picture.
VIDEO_LATENCY_HOOK_JS = READ_VIDEO_JS + r"""
window.__latency = [];
document.querySelectorAll("video").forEach((video) => video.addEventListener("frame", () => {
  const codes = window.__streamerVideoCodes(video);
  if (codes && codes.wall !== null) window.__latency.push(((Date.now() % 2 ** 32) - codes.wall + 2 ** 32) % 2 ** 32);
}));
return true;
"""


def missing() -> Optional[str]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            return f"{path} is missing: apt-get install {BROWSER_PACKAGES}"
    return None


def chromium(width: int = 1400, height: int = 1000, extra: List[str] = ()):
    """A headless Chromium driven by selenium (the caller quits it)."""
    problem = missing()
    if problem:
        raise AssertionError(problem)
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager: never download a driver or a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", "--no-first-run", "--mute-audio", f"--window-size={width},{height}",
                *extra):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
