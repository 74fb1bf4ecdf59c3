"""Make samples/sample.mp4: a short clip with real-world content, from photographs that
scikit-image ships (no download): an astronaut (person), a cat, a cup of coffee and a
motorcycle. Each photo gets a slow zoom/pan ("Ken Burns") for one second.

    pip install -e '.[samples]'
    python samples/make_sample.py            # writes samples/sample.mp4

Deterministic: the same clip every time (H.264, 640x480, 12 fps, 48 frames, 4 s).
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data

WIDTH, HEIGHT = 640, 480
FPS = Fraction(12)
SECONDS_PER_PHOTO = 1


def photos():
    """(name, RGB image) for each photograph, in clip order."""
    left, _right, _disparity = data.stereo_motorcycle()
    return [
        ("astronaut", data.astronaut()),
        ("cat", data.chelsea()),
        ("coffee", data.coffee()),
        ("motorcycle", left),
    ]


def ken_burns(image: np.ndarray, t: float) -> np.ndarray:
    """The photo cropped to 4:3, zoomed from 100 % to 85 % and panned while t goes 0 -> 1."""
    h, w = image.shape[:2]
    crop_w = min(w, int(h * 4 / 3))
    crop_h = int(crop_w * 3 / 4)
    zoom = 1.0 - 0.15 * t
    cw, ch = int(crop_w * zoom), int(crop_h * zoom)
    x0 = int((w - cw) * (0.5 + 0.3 * (t - 0.5)))
    y0 = int((h - ch) * 0.5)
    window = image[y0:y0 + ch, x0:x0 + cw]
    return cv2.resize(window, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)


def make(path: Path) -> int:
    frames_per_photo = int(FPS * SECONDS_PER_PHOTO)
    with av.open(str(path), mode="w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "20", "preset": "medium"}
        count = 0
        for _name, photo in photos():
            for i in range(frames_per_photo):
                frame = av.VideoFrame.from_ndarray(ken_burns(photo, i / (frames_per_photo - 1)), format="rgb24")
                frame.pts = count
                container.mux(stream.encode(frame))
                count += 1
        container.mux(stream.encode(None))
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("sample.mp4"))
    args = parser.parse_args()
    count = make(args.out)
    print(f"wrote {args.out}: {count} frames, {WIDTH}x{HEIGHT} at {FPS} fps")


if __name__ == "__main__":
    main()
