"""`streamer doctor`: the troubleshooting list, run against a real server.

Each step prints one line: [ok] / [FAIL] / [warn], what was checked, and on failure
the fix. It stops at the first failure (later steps depend on it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import ExitCode, StreamerError
from .frames import Detections

Echo = Callable[[str], None]


def first_frame(path: Path) -> np.ndarray:
    """RGB image from an image file, or the first frame of a video."""
    import cv2

    from .frames import from_bgr
    from .sources import FileSource, parse_source

    path = parse_source(str(path))
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.suffix.lower() in (
        ".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff") else None
    if bgr is not None:
        return from_bgr(bgr)
    with FileSource(path) as source:
        for frame in source.frames():
            return frame.image
    from .errors import SourceError

    raise SourceError(f"{path}: no frame could be decoded")


def explain_empty(raw: Detections, threshold: float, untrained: bool) -> str:
    """Why nothing would be drawn, or how many would be."""
    shown = raw.above(threshold)
    if len(shown):
        return f"{len(shown)} detection(s) >= {threshold}"
    if not len(raw):
        why = "the model returned no boxes at all"
        if untrained:
            why += " (its weights are UNTRAINED: random MobileNet detectors score every class about 1/91, below " \
                   "their own 0.05 box threshold; export real weights)"
        else:
            why += " (no object it knows in this image, or --box-score-thresh set high at export)"
        return why
    best = float(raw.scores.max())
    return (f"all {len(raw)} scores are below --threshold {threshold} (best {best:.3f}); "
            f"lower --threshold to see them" + (" (the weights are UNTRAINED)" if untrained else ""))


def diagnose(url: str, input_path: Path, threshold: float, echo: Echo) -> int:
    from .triton import TritonClient

    def ok(what: str, detail: str = "") -> None:
        echo(f"[ok]   {what}" + (f": {detail}" if detail else ""))

    with TritonClient(url) as client:
        info = None
        try:
            for what, detail, maybe_info in client.checks():
                ok(what, detail)
                info = maybe_info or info
        except StreamerError as err:
            echo(f"[FAIL] {err}")
            return err.exit_code
        if info.untrained:
            echo("[warn] the model's weights are UNTRAINED (random): detections are meaningless")
        try:
            image = first_frame(input_path)
        except StreamerError as err:
            echo(f"[FAIL] sample input: {err} (pass --input IMAGE_OR_VIDEO)")
            return err.exit_code
        try:
            started = time.monotonic()
            raw = client.infer(image)
            first = time.monotonic() - started
            started = time.monotonic()
            client.infer(image)
            second = time.monotonic() - started
        except StreamerError as err:
            echo(f"[FAIL] inference: {err}")
            return err.exit_code
        ok("one inference", f"{first * 1000:.0f} ms (again: {second * 1000:.0f} ms) on a "
                            f"{image.shape[1]}x{image.shape[0]} frame of {input_path.name}")
        ok("raw outputs", f"output__0 boxes {raw.boxes.dtype} {list(raw.boxes.shape)}, output__1 labels "
                          f"{raw.labels.dtype} {list(raw.labels.shape)}, output__2 scores {raw.scores.dtype} "
                          f"{list(raw.scores.shape)}")
        top = np.argsort(-raw.scores)[:5]
        if len(top):
            echo("       top scores: " + ", ".join(
                f"{info.name_of(int(raw.labels[i]))} {raw.scores[i]:.3f}" for i in top))
        verdict = explain_empty(raw, threshold, info.untrained)
        if len(raw.above(threshold)):
            ok("detections", verdict)
        else:
            echo(f"[warn] nothing to draw: {verdict}")
    return ExitCode.OK
