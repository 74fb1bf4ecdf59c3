"""Web view benchmark: capture-to-browser latency, CPU per viewer, bandwidth, frames drawn.

A fake run (tests/webfeed.py: synthetic cameras whose pictures carry their index and capture
wall-clock milliseconds as black/white blocks) feeds a WebDisplay on 127.0.0.1; no Triton.

    .venv/bin/python scripts/web_benchmark.py                       # 4 cameras 1280x720 at 25 fps
    .venv/bin/python scripts/web_benchmark.py --cameras 8 --seconds 10

Phases, each `--seconds` long, CPU time of this process (the run + the server + encoding):
  1. the run with a display that does nothing (no --web)
  2. the run with the web display and nobody watching (encoding stops: the goal is within 2 % of a core of 1)
  3. 1 .. --viewers WebSocket viewers (separate processes reading every message): CPU added per viewer,
     bandwidth per page
  4. one MJPEG mosaic viewer: bandwidth
  4b. the page's bandwidth with H.264 (fragmented MP4) instead of JPEG
  5. headless Chromium on the page, JPEG on canvases then H.264 through MSE: capture-to-screen latency
     p50/p95 of the tiles, then of the enlarged camera (full size), and pictures shown / pictures received
Figures are printed, never asserted: machines differ (headless Chromium shares the CPU with the run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.web import WebDisplay  # noqa: E402
from tests.browser import LATENCY_HOOK_JS, VIDEO_LATENCY_HOOK_JS, chromium  # noqa: E402
from tests.webfeed import FakeRun  # noqa: E402

VIEWER = r"""
import json, sys, time, websocket
port, seconds, path, codec = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
count = size = 0
if path.endswith(".mjpg"):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    print("ready", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        chunk = response.read1(65536)
        size += len(chunk)
        count += chunk.count(b"Content-Type: image/jpeg")
else:
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=10)
    ws.send(json.dumps({"type": "view", "camera": None, "codec": codec}))
    print("ready", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        opcode, data = ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_BINARY:
            count += 1
            size += len(data)
print(json.dumps({"pictures": count, "bytes": size, "seconds": seconds}), flush=True)
"""


class NullDisplay:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def show(self, views):
        return True


def cpu_over(seconds: float) -> float:
    """Cores used by this process over `seconds` (CPU time / wall time)."""
    cpu, wall = time.process_time(), time.monotonic()
    time.sleep(seconds)
    return (time.process_time() - cpu) / (time.monotonic() - wall)


def start_viewer(port: int, seconds: float, path: str = "/ws", codec: str = "jpeg") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", VIEWER, str(port), str(seconds), path, codec],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def finish(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=120)
    return json.loads(out.strip().splitlines()[-1])


def percentiles(samples):
    q = statistics.quantiles(samples, n=20)
    return statistics.median(samples), q[18]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def browser_phase(driver, web, names, args, codec: str) -> None:
    """Latency of the tiles and of the enlarged camera in Chromium, and pictures shown / received."""
    hook = LATENCY_HOOK_JS if codec == "jpeg" else VIDEO_LATENCY_HOOK_JS
    label = "WebSocket JPEG on canvases" if codec == "jpeg" else "H.264 fMP4 through MSE"
    driver.get(f"{web.url}?codec={codec}")
    wait_for(lambda: driver.execute_script(
        "return document.querySelectorAll('#grid .tile').length") == len(names), 60, "the tiles")
    wait_for(lambda: driver.execute_script("return window.streamerStats.drawn") > len(names) * 5, 60,
             "pictures shown")
    driver.execute_script(hook)
    start = driver.execute_script("return Object.assign({}, window.streamerStats)")
    wait_for(lambda: driver.execute_script("return window.__latency.length") >= args.samples, 300, "latency samples")
    end = driver.execute_script("return Object.assign({}, window.streamerStats)")
    p50, p95 = percentiles(driver.execute_script("return window.__latency"))
    shown = (end["drawn"] - start["drawn"]) / max(1, end["received"] - start["received"])
    print(f"Chromium, tiles, {label}: capture-to-screen p50 {p50:.0f} ms, p95 {p95:.0f} ms; "
          f"shown / received {shown:.2f}")
    driver.find_element("css selector", "#grid .tile").click()
    element = "canvas" if codec == "jpeg" else "video"
    size = "width" if codec == "jpeg" else "videoWidth"
    wait_for(lambda: driver.execute_script(
        f"return document.querySelector('#enlarged {element}').{size}") == args.width, 60, "the enlarged camera")
    driver.execute_script(hook)
    wait_for(lambda: driver.execute_script("return window.__latency.length") >= args.samples // 2, 300,
             "latency samples")
    p50, p95 = percentiles(driver.execute_script("return window.__latency"))
    print(f"Chromium, enlarged {args.width}x{args.height}, {label}: capture-to-screen p50 {p50:.0f} ms, "
          f"p95 {p95:.0f} ms")
    driver.find_element("id", "back").click()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--viewers", type=int, default=4)
    parser.add_argument("--samples", type=int, default=300, help="latency samples per browser phase")
    args = parser.parse_args()
    names = [f"cam {i + 1}" for i in range(args.cameras)]
    print(f"{args.cameras} cameras {args.width}x{args.height} at {args.fps:g} fps, {args.seconds:g} s per phase "
          f"(CPU: cores of this process: the fake run, the server, encoding)")

    with NullDisplay() as null, FakeRun(null, names, args.fps, args.width, args.height):
        base = cpu_over(args.seconds)
    print(f"without the web display:            {base * 100:5.1f} % of a core")

    with WebDisplay("127.0.0.1", 0) as web, FakeRun(web, names, args.fps, args.width, args.height):
        idle = cpu_over(args.seconds)
        print(f"web display, nobody watching:       {idle * 100:5.1f} % of a core "
              f"({(idle - base) * 100:+.1f}; encodes: {web.encodes})")
        viewers, previous = [], idle
        for n in range(1, args.viewers + 1):
            viewers.append(start_viewer(web.port, args.seconds + 30))
            wait_for(lambda: web.viewers == n, 30, f"{n} viewers")
            cores = cpu_over(args.seconds)
            print(f"{n} WebSocket viewer(s):              {cores * 100:5.1f} % of a core "
                  f"({(cores - previous) * 100:+.1f} for this viewer)")
            previous = cores
        for proc in viewers:
            proc.terminate()
        for proc in viewers:
            proc.wait(30)
        wait_for(lambda: web.viewers == 0, 30, "the viewers to leave")

        page = start_viewer(web.port, args.seconds)
        got = finish(page)
        print(f"bandwidth, the {args.cameras}-camera page (tiles, WebSocket JPEG): "
              f"{got['bytes'] * 8 / got['seconds'] / 1e6:.1f} Mbit/s, {got['pictures'] / got['seconds']:.1f} pictures/s")
        wait_for(lambda: web.viewers == 0, 30, "the viewer to leave")
        page = start_viewer(web.port, args.seconds, codec="h264")
        got = finish(page)
        print(f"bandwidth, the {args.cameras}-camera page (tiles, H.264 fMP4):      "
              f"{got['bytes'] * 8 / got['seconds'] / 1e6:.1f} Mbit/s, {got['pictures'] / got['seconds']:.1f} pictures/s")
        wait_for(lambda: web.viewers == 0, 30, "the viewer to leave")
        mosaic = start_viewer(web.port, args.seconds, "/mosaic.mjpg")
        got = finish(mosaic)
        print(f"bandwidth, /mosaic.mjpg:             {got['bytes'] * 8 / got['seconds'] / 1e6:.1f} Mbit/s, "
              f"{got['pictures'] / got['seconds']:.1f} pictures/s")
        wait_for(lambda: web.viewers == 0, 30, "the viewers to leave")

        driver = chromium()
        try:
            for codec in ("jpeg", "h264"):
                browser_phase(driver, web, names, args, codec)
        finally:
            driver.quit()
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (other work shares the CPU)")


if __name__ == "__main__":
    main()
