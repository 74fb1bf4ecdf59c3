"""Synthetic clips for the tracker: sprites on textured backgrounds, moving on known paths.

A `Scene` is a list of sprites, each a function frame index -> its box (or None when it is not
visible: off screen or hidden). `render(scene)` draws the frames (RGB) and returns the truth:
per frame the visible sprites' boxes (clipped to the frame), which the tests feed to the
trackers as "detections" on the inferred frames and compare with what they draw on the others.

Sprites are a solid colour (their label) with a coarse darker pattern, so that optical flow has
texture to follow, as real objects have; `flat=True` draws them without it (flow then fails on
them and the Kalman fallback carries them). The background is a smooth random texture; a cut
changes it (another seed) at a given frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from streamer.frames import Detections, Frame

WIDTH, HEIGHT = 640, 480
RATE = 25
COLOURS = {1: (230, 40, 40), 2: (40, 200, 60), 3: (40, 90, 230), 4: (240, 200, 30)}  # label -> RGB

Box = Tuple[float, float, float, float]


@dataclass
class Sprite:
    key: str  # a name for the truth (which object it is)
    label: int
    path: Callable[[int], Optional[Box]]  # frame index -> unclipped box, or None (hidden)


@dataclass
class Scene:
    name: str
    frames: int
    sprites: List[Sprite]
    cuts: Sequence[int] = ()  # frames that start a new shot (the background changes)
    occluders: Sequence[Tuple[Box, Tuple[int, int]]] = ()  # (box, (first, last frame)) drawn over sprites
    flat: bool = False
    plain: bool = False  # a plain grey background: nothing anywhere for optical flow to follow


@dataclass
class Truth:
    """Per frame: sprite key -> (label, box clipped to the frame) for the visible sprites."""

    boxes: List[Dict[str, Tuple[int, np.ndarray]]] = field(default_factory=list)

    def detections(self, index: int, score: float = 0.9) -> Detections:
        items = sorted(self.boxes[index].items())
        return Detections(np.array([b for _, (_, b) in items], np.float32).reshape(-1, 4),
                          np.array([label for _, (label, _) in items], np.int64),
                          np.full(len(items), score, np.float32))

    def keys(self, index: int) -> List[str]:
        return sorted(self.boxes[index])


def background(seed: int) -> np.ndarray:
    """A smooth random texture (corners for flow to lock on), RGB uint8."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8)
    img = cv2.resize(noise, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    fine = rng.integers(-25, 26, (HEIGHT, WIDTH, 1))
    return np.clip(img.astype(np.int16) // 2 + 64 + fine, 0, 255).astype(np.uint8)


def clip(box: Box) -> Optional[np.ndarray]:
    x1, y1, x2, y2 = box
    x1, y1, x2, y2 = max(0.0, x1), max(0.0, y1), min(float(WIDTH), x2), min(float(HEIGHT), y2)
    if x2 - x1 < 4 or y2 - y1 < 4:
        return None
    return np.array([x1, y1, x2, y2], np.float64)


def _pattern(label: int) -> np.ndarray:
    """A sprite's own irregular pattern (0..80, to darken its colour), 128 x 128."""
    rng = np.random.default_rng(label)
    coarse = rng.integers(0, 81, (16, 16)).astype(np.uint8)
    return cv2.resize(coarse, (128, 128), interpolation=cv2.INTER_CUBIC).astype(np.int16)


PATTERNS = {label: _pattern(label) for label in COLOURS}


def _paint(img: np.ndarray, box: Box, label: int, flat: bool) -> None:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    h, w = img.shape[:2]
    cx1, cy1, cx2, cy2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if cx2 <= cx1 or cy2 <= cy1:
        return
    patch = np.broadcast_to(np.array(COLOURS[label], np.int16), (y2 - y1, x2 - x1, 3)).copy()
    if not flat:  # an irregular pattern fixed to the sprite (it moves and scales with it)
        pattern = cv2.resize(PATTERNS[label], (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
        patch = patch - pattern[..., None]
    patch = patch[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
    img[cy1:cy2, cx1:cx2] = np.clip(patch, 0, 255).astype(np.uint8)


_RENDERED: Dict[Tuple[str, int, bool, bool], Tuple[List[Frame], Truth]] = {}


def render(scene: Scene) -> Tuple[List[Frame], Truth]:
    """The scene's frames (25 fps timestamps, wall time = media time) and its truth (kept: the
    tests draw the same scenes many times; frames are immutable)."""
    key = (scene.name, scene.frames, scene.flat, scene.plain)
    if key not in _RENDERED:
        _RENDERED[key] = _render(scene)
    frames, truth = _RENDERED[key]
    return list(frames), truth


def _render(scene: Scene) -> Tuple[List[Frame], Truth]:
    frames, truth = [], Truth()
    backgrounds: Dict[int, np.ndarray] = {}
    for i in range(scene.frames):
        shot = sum(1 for c in scene.cuts if c <= i)
        if shot not in backgrounds:
            backgrounds[shot] = np.full((HEIGHT, WIDTH, 3), 110, np.uint8) if scene.plain else background(1000 + shot)
        img = backgrounds[shot].copy()
        seen: Dict[str, Tuple[int, np.ndarray]] = {}
        for sprite in scene.sprites:
            box = sprite.path(i)
            if box is None:
                continue
            _paint(img, box, sprite.label, scene.flat)
            visible = clip(box)
            if visible is not None:
                seen[sprite.key] = (sprite.label, visible)
        for box, (first, last) in scene.occluders:
            if first <= i <= last:
                x1, y1, x2, y2 = (int(v) for v in box)
                img[y1:y2, x1:x2] = (90, 90, 90)
                for key, (_, b) in list(seen.items()):  # hidden behind it: the model would not see it
                    if _covered(b, box) > 0.5:
                        del seen[key]
        frames.append(Frame(index=i, pts=i, time_base=Fraction(1, RATE), wall_time=i / RATE, image=img))
        truth.boxes.append(seen)
    return frames, truth


def _covered(box: np.ndarray, cover: Box) -> float:
    x1, y1 = max(box[0], cover[0]), max(box[1], cover[1])
    x2, y2 = min(box[2], cover[2]), min(box[3], cover[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / max(1e-9, (box[2] - box[0]) * (box[3] - box[1]))


def _box(cx: float, cy: float, w: float, h: float) -> Box:
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


# -- the scenes -------------------------------------------------------------------------------
def straight(frames: int = 61) -> Scene:
    return Scene("straight", frames, [
        Sprite("a", 1, lambda i: _box(60 + 8 * i, 150 + 1.5 * i, 70, 90)),
        Sprite("b", 2, lambda i: _box(560 - 6 * i, 360, 90, 60)),
    ])


def turning(frames: int = 61) -> Scene:
    """One sprite on a circle (about 8 px a frame), one on an S-curve that grows (apart)."""
    return Scene("turning", frames, [
        Sprite("a", 1, lambda i: _box(400 + 120 * math.cos(0.07 * i), 260 + 120 * math.sin(0.07 * i), 70, 80)),
        Sprite("b", 3, lambda i: _box(120 + 60 * math.sin(0.08 * i), 60 + 6 * i, 60 + 0.5 * i, 60 + 0.5 * i)),
    ])


def crossing(frames: int = 61) -> Scene:
    """Two sprites of the same class crossing each other (the hard case for ids), fully
    overlapping at frame 32 (b in front)."""
    return Scene("crossing", frames, [
        Sprite("a", 1, lambda i: _box(80 + 8 * i, 200 + 1.0 * i, 70, 90)),
        Sprite("b", 1, lambda i: _box(592 - 8 * i, 264 - 1.0 * i, 70, 90)),
    ])


def leaving(frames: int = 91) -> Scene:
    """One sprite leaves on the right and comes back; the other stays in view."""
    def out_and_back(i: int) -> Box:
        x = 400 + 12 * i if i <= 30 else 400 + 12 * 30 - 12 * (i - 30)
        return _box(x, 200, 70, 70)
    return Scene("leaving", frames, [
        Sprite("a", 2, out_and_back),
        Sprite("b", 1, lambda i: _box(120 + 3 * i, 360, 80, 80)),
    ])


def occluded(frames: int = 61) -> Scene:
    """A sprite passes behind a bar for a few frames."""
    return Scene("occluded", frames, [
        Sprite("a", 1, lambda i: _box(60 + 9 * i, 240, 60, 80)),
    ], occluders=[((300, 150, 345, 330), (0, frames))])


def cut(frames: int = 50, at: int = 23) -> Scene:
    """A hard cut: the background changes and the sprites jump."""
    return Scene("cut", frames, [
        Sprite("a", 1, lambda i: _box(100 + 6 * i, 200, 70, 90) if i < at else _box(500 - 5 * (i - at), 330, 80, 70)),
        Sprite("b", 2, lambda i: _box(500, 120 + 3 * i, 60, 60) if i < at else _box(150, 120 + 3 * i, 60, 60)),
    ], cuts=[at])


def crowd(frames: int = 61) -> Scene:
    """Ten sprites on Lissajous paths (2-9 px a frame; some pass over others): the benchmark's
    10 objects."""
    def path(k: int) -> Callable[[int], Box]:
        w, h = 50 + 3 * k, 80 - 2 * k
        cx, cy, ax, ay = 80 + 53 * k, 110 + 85 * (k % 4), 40 + 4 * k, 30 + 3 * (9 - k)
        wx, wy, phase = 0.03 + 0.01 * (k % 5), 0.05 + 0.01 * (k % 3), k * 0.7
        return lambda i: _box(cx + ax * math.sin(wx * i + phase), cy + ay * math.cos(wy * i + phase), w, h)
    return Scene("crowd", frames, [Sprite(f"s{k}", 1 + k % 4, path(k)) for k in range(10)])


SCENES = {s.__name__: s for s in (straight, turning, crossing, leaving, occluded, cut, crowd)}


# -- measuring ---------------------------------------------------------------------------------
def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def best_match(truth: Dict[str, Tuple[int, np.ndarray]], detections: Optional[Detections]) -> Dict[str, Tuple[float, int]]:
    """Per visible sprite: (IoU, track id) of the drawn box of its label overlapping it most
    ((0, -1) when none does). Each drawn box serves one sprite (the best pairs first)."""
    out = {key: (0.0, -1) for key in truth}
    if detections is None or not len(detections):
        return out
    pairs = []
    for key, (label, box) in truth.items():
        for row in range(len(detections)):
            if int(detections.labels[row]) == label:
                pairs.append((iou(box, detections.boxes[row]), key, row))
    used_keys, used_rows = set(), set()
    for value, key, row in sorted(pairs, reverse=True):
        if value <= 0 or key in used_keys or row in used_rows:
            continue
        tid = int(detections.track_ids[row]) if detections.track_ids is not None else -1
        out[key] = (value, tid)
        used_keys.add(key)
        used_rows.add(row)
    return out


def id_switches(ids_per_frame: Sequence[Optional[int]]) -> int:
    """How often a sprite's id changes from one frame where it has one to the next."""
    switches, last = 0, None
    for tid in ids_per_frame:
        if tid is None or tid < 0:
            continue
        if last is not None and tid != last:
            switches += 1
        last = tid
    return switches


def inferred_frames(count: int, every: int, cuts: Sequence[int] = ()) -> List[int]:
    """0, N, 2N, ..., each cut frame and the last frame."""
    return sorted(set(range(0, count, every)) | set(cuts) | {count - 1})


# -- driving the stages ---------------------------------------------------------------------------
@dataclass
class FileRun:
    """What a FileTracker released for a rendered scene, and the figures the tests check."""

    scene: Scene
    truth: Truth
    inferred: List[int]
    released: List[Tuple[Frame, Optional[Detections]]]

    def between(self) -> List[int]:
        return [i for i in range(self.scene.frames) if i not in set(self.inferred)]

    def mean_iou(self, keys: Optional[Sequence[str]] = None) -> float:
        """Mean IoU on the frames the model did not see, over the visible sprites (`keys`)."""
        values = []
        for i in self.between():
            got = best_match(self.truth.boxes[i], self.released[i][1])
            values += [v for key, (v, _) in got.items() if keys is None or key in keys]
        return float(np.mean(values)) if values else float("nan")

    def ids(self, key: str) -> List[Optional[int]]:
        """The sprite's track id on every frame (None where it has no box, or where it coincides
        with another sprite of its class: no one can tell which box is which there)."""
        out = []
        for i in range(self.scene.frames):
            got = best_match(self.truth.boxes[i], self.released[i][1]).get(key)
            out.append(got[1] if got and got[0] > 0 and not self.coincides(i, key) else None)
        return out

    def coincides(self, index: int, key: str) -> bool:
        boxes = self.truth.boxes[index]
        label, box = boxes[key]
        return any(other != key and olabel == label and iou(box, obox) > 0.9
                   for other, (olabel, obox) in boxes.items())


def run_file(scene: Scene, every: int = 5, stage=None, jitter: float = 0.0, seed: int = 0) -> FileRun:
    """Feed a scene to a FileTracker (default FileTracker(every)), truth as detections on the
    inferred frames (optionally with box jitter, a fraction of the box size)."""
    from streamer.tracking import FileTracker

    frames, truth = render(scene)
    stage = stage or FileTracker(every)
    inferred = inferred_frames(len(frames), every, scene.cuts)
    rng = np.random.default_rng(seed)
    released = []
    for frame in frames:
        detections = None
        if frame.index in inferred:
            detections = truth.detections(frame.index)
            if jitter:
                size = np.sqrt((detections.boxes[:, 2] - detections.boxes[:, 0]) *
                               (detections.boxes[:, 3] - detections.boxes[:, 1]))[:, None]
                detections = detections.replace(boxes=detections.boxes + rng.normal(0, jitter, (len(size), 4)) * size)
        released += list(stage.push(frame, detections))
    released += list(stage.flush())
    return FileRun(scene, truth, inferred, released)


@dataclass
class LiveRun:
    """What a LiveTracker showed on every frame, and what holding the last answer would show."""

    scene: Scene
    truth: Truth
    shown: List[Optional[Detections]]  # the tracker's boxes per frame
    held: List[Optional[Detections]]  # the last answer's boxes per frame (today's --hold-detections)
    answers: List[Tuple[int, int, Detections]]  # (answered frame, frame pushed when it came, with ids)

    def mean_iou(self, which: str = "shown", start: int = 0) -> float:
        boxes = self.shown if which == "shown" else self.held
        values = []
        for i in range(start, self.scene.frames):
            values += [v for v, _ in best_match(self.truth.boxes[i], boxes[i]).values()]
        return float(np.mean(values)) if values else float("nan")


def run_live(scene: Scene, latency: int = 8, stage=None) -> LiveRun:
    """Feed a scene to a LiveTracker as a live run would: every frame is pushed; the model takes
    the newest frame whenever it is free and answers `latency` frames later (a model about
    1/latency of the camera's rate)."""
    from streamer.tracking import LiveTracker

    frames, truth = render(scene)
    stage = stage or LiveTracker()
    shown: List[Optional[Detections]] = []
    held: List[Optional[Detections]] = []
    answers = []
    busy: Optional[int] = None  # the frame the model is working on
    last_answer: Optional[Detections] = None
    for frame in frames:
        if busy is not None and frame.index >= busy + latency:  # the answer arrives before this frame
            answered = stage.answer(frames[busy], truth.detections(busy))
            answers.append((busy, frame.index, answered))
            last_answer, busy = answered, None
        for _, detections in stage.push(frame, None):
            shown.append(detections)
        held.append(last_answer)
        if busy is None:
            busy = frame.index
    return LiveRun(scene, truth, shown, held, answers)


# -- the bundled sample's known motion -------------------------------------------------------------
SAMPLE_PHOTOS = (("astronaut", 512, 512), ("cat", 451, 300), ("coffee", 600, 400), ("motorcycle", 741, 500))
SAMPLE_SHOT = 12  # frames per photo (samples/make_sample.py: 12 fps, one second each)
SAMPLE_SIZE = (640, 480)


def sample_window(photo_w: int, photo_h: int, t: float) -> Tuple[int, int, int, int]:
    """The photo window (x0, y0, width, height) shown at t in 0..1: samples/make_sample.py's
    ken_burns(), the same integer arithmetic."""
    crop_w = min(photo_w, int(photo_h * 4 / 3))
    crop_h = int(crop_w * 3 / 4)
    zoom = 1.0 - 0.15 * t
    cw, ch = int(crop_w * zoom), int(crop_h * zoom)
    x0 = int((photo_w - cw) * (0.5 + 0.3 * (t - 0.5)))
    y0 = int((photo_h - ch) * 0.5)
    return x0, y0, cw, ch


def sample_truth(index: int, photo_box: Sequence[float]) -> np.ndarray:
    """Where a box fixed in the photo of `index`'s shot (photo pixels) is on frame `index`."""
    _, pw, ph = SAMPLE_PHOTOS[index // SAMPLE_SHOT]
    x0, y0, cw, ch = sample_window(pw, ph, (index % SAMPLE_SHOT) / (SAMPLE_SHOT - 1))
    sx, sy = SAMPLE_SIZE[0] / cw, SAMPLE_SIZE[1] / ch
    x1, y1, x2, y2 = photo_box
    return np.array([(x1 - x0) * sx, (y1 - y0) * sy, (x2 - x0) * sx, (y2 - y0) * sy])


def sample_photo_box(shot: int, frame_box: Sequence[float]) -> np.ndarray:
    """The photo box that shows as `frame_box` on the first frame of `shot`."""
    _, pw, ph = SAMPLE_PHOTOS[shot]
    x0, y0, cw, ch = sample_window(pw, ph, 0.0)
    sx, sy = SAMPLE_SIZE[0] / cw, SAMPLE_SIZE[1] / ch
    x1, y1, x2, y2 = frame_box
    return np.array([x0 + x1 / sx, y0 + y1 / sy, x0 + x2 / sx, y0 + y2 / sy])


def sample_frames(path) -> List[Frame]:
    """The sample's frames, decoded with PyAV (pts as the file has them)."""
    import av

    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for i, vframe in enumerate(container.decode(stream)):
            frames.append(Frame(index=i, pts=vframe.pts, time_base=Fraction(stream.time_base),
                                wall_time=float(vframe.pts * stream.time_base), image=vframe.to_ndarray(format="rgb24")))
    return frames
