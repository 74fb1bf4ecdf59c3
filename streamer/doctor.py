"""`streamer doctor`: the troubleshooting list, run against a real server.

Each step prints one line: [ok] / [FAIL] / [warn], what was checked, and on failure
the fix. It stops at the first failure (later steps depend on it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

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


def diagnose(url: str, input_path: Path, threshold: float, echo: Echo, model: Optional[str] = None,
             transport: str = "auto") -> int:
    """Both models (or the one named): present or not, contract, one inference each, timing."""
    from . import contract
    from .errors import ModelNotReady

    try:
        image = first_frame(input_path)
    except StreamerError as err:
        echo(f"[FAIL] sample input: {err} (pass --input IMAGE_OR_VIDEO)")
        return err.exit_code
    names = [model] if model else list(contract.PREFERRED_MODELS)
    shown: set = set()
    served = []
    for name in names:
        code = _diagnose_model(url, name, transport, image, input_path.name, threshold, echo, shown)
        if code is None:  # not served
            continue
        if code != ExitCode.OK:
            return code
        served.append(name)
    if not served:
        echo(f"[FAIL] the server at {url} serves neither {' nor '.join(names)}; export with "
             "`streamer export-model` and restart the server")
        return ModelNotReady.exit_code
    if model is None:
        echo(f"[ok]   `streamer run` uses {served[0]} by default (--model to choose)")
    return ExitCode.OK


def _diagnose_model(url: str, name: str, transport: str, image: np.ndarray, input_name: str, threshold: float,
                    echo: Echo, shown: set) -> Optional[int]:
    """One model's checks; None when the server does not serve it (and others may be tried)."""
    from .errors import ModelMismatch
    from .states import Transport
    from .triton import ModelNotServed, OutputCheck, TritonClient

    def ok(what: str, detail: str = "") -> None:
        line = f"[ok]   {what}" + (f": {detail}" if detail else "")
        if line not in shown:  # the server's own checks once, not per model
            shown.add(line)
            echo(line)

    echo(f"-- model {name}")
    with TritonClient(url, model=name, transport=Transport(transport), log=lambda m: echo(f"[warn] {m}"),
                      outputs=OutputCheck()) as client:  # boxes that are not numbers: one [FAIL] below
        info = None
        try:
            for what, detail, maybe_info in client.checks():
                ok(what, detail)
                info = maybe_info or info
        except ModelNotServed:
            echo(f"[--]   {name} is not served by this server")
            return None
        except StreamerError as err:
            echo(f"[FAIL] {err}")
            return err.exit_code
        if info.untrained:
            echo("[warn] the model's weights are UNTRAINED (random): detections are meaningless")
        try:
            count0, compute0 = client.compute_stats()
            times, answers = [], []
            for _ in range(3):
                started = time.monotonic()
                answers.append(client.infer(image))
                times.append(time.monotonic() - started)
            raw = answers[0]
            count1, compute1 = client.compute_stats()
        except StreamerError as err:
            echo(f"[FAIL] inference: {err}")
            return err.exit_code
        server = ""
        if count1 > count0:
            server = f"; server compute {(compute1 - compute0) / (count1 - count0) * 1000:.0f} ms/frame"
        ok("one inference", f"{name}: first {times[0] * 1000:.0f} ms, then {times[1] * 1000:.0f} and "
                                 f"{times[2] * 1000:.0f} ms{server} on a {image.shape[1]}x{image.shape[0]} frame "
                                 f"of {input_name} over {client.transport}")
        ok("raw outputs", f"{name}: boxes {raw.boxes.dtype} {list(raw.boxes.shape)}, labels "
                                      f"{raw.labels.dtype} {list(raw.labels.shape)}, scores {raw.scores.dtype} "
                                      f"{list(raw.scores.shape)}")
        top = np.argsort(-raw.scores)[:5]
        if len(top):
            echo("       top scores: " + ", ".join(
                f"{info.name_of(int(raw.labels[i]))} {raw.scores[i]:.3f}" for i in top))
        if client.outputs.rows:
            echo(f"[FAIL] the model is broken: {client.outputs.rows} box(es) in its {len(answers)} answer(s) had "
                 f"coordinates or scores that are not numbers (NaN or infinite); a run drops them. Re-export "
                 f"the model (streamer export-model) or check its conversion (fp16 overflow?)")
            return ModelMismatch.exit_code
        verdict = explain_empty(raw, threshold, info.untrained)
        if len(raw.above(threshold)):
            ok("detections", f"{name}: {verdict}")
        else:
            echo(f"[warn] nothing to draw: {verdict}")
    return ExitCode.OK
