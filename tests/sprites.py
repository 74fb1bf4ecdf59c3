"""A sprite "detector" under the real Triton contracts, and clips of sprites on known paths.

Meaningful boxes without real weights: `SpriteDetector` is a small TorchScript module that finds
solid-coloured sprites by colour (a colour -> a COCO label; the box is the sprite's pixel extent;
the score is fixed). `export_sprites(repo)` writes it as both models of an export, `fasterrcnn`
(FP32 [3, H, W] in 0..1, N rows out) and `fasterrcnn_u8` (uint8 [B, H, W, 3] in, K padded rows and
a count out), with config.pbtxt written by `streamer.contract` exactly as `streamer export-model`
writes it (same inputs, outputs, batching, warm-up, parameters, COCO class names from torchvision's
weights meta). The embedded Triton serves it through its Python-backend twin as it serves a real
export, and `streamer run --triton ...` uses it unchanged. About 15 ms a 640x480 frame on one core.
`export_sprites(repo, max_queue_delay_us=...)` makes `fasterrcnn_u8` slow without using CPU (a model
far slower than a camera). `detect(image)` is the same detector in numpy.

Clips: sprites (a solid hue whose brightness carries a coarse pattern fixed to the sprite, so that
optical flow has texture to follow) on a textured grey background (no hue: never detected), moving
on known paths. The truth of a frame is each sprite's visible pixel extent (after the sprites in
front of it and the occluders; parts thinner than 2 * ERODE + 1 pixels left out), exactly what a
perfect detector sees. The frame index is coded in black/white cells across the top-left corner
(tests.helpers.read_code reads it back); the paths keep the sprites (and their labels) clear of it.

Imports torch (no `from __future__ import annotations` here: TorchScript reads the annotations).
"""

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from .helpers import CELL, CODE_BITS, write_clip

# colour name -> (RGB, COCO label). red and magenta are both "person": two objects of one class
# that a colour detector can still tell apart (the crossing scene).
COLOURS: Dict[str, Tuple[Tuple[int, int, int], int]] = {
    "red": ((225, 35, 35), 1),  # person
    "magenta": ((220, 35, 220), 1),  # person
    "green": ((35, 200, 45), 3),  # car
    "blue": ((35, 70, 230), 18),  # dog
    "yellow": ((230, 210, 35), 2),  # bicycle
}
COLOUR_ORDER = ("red", "magenta", "green", "blue", "yellow")  # the detector's mask order
SCORE = 0.9
# A pixel is of a colour when its hue margin (see SpriteDetector) exceeds this: sprite pixels have
# about 100-190 (the darkest pattern: blue and green about 100), the grey background and H.264
# noise about 0-10, the seam where a sprite meets the grey about half its margin. Half-integer:
# the FP32 model's 0..1 input scaled back by 255 is off by float rounding, never by 0.5.
MARGIN = 80.5
# A colour's mask is eroded by this many pixels (a (2r+1) square) before its extent is taken, and
# the extent grown back by as much: the 1-3 px seams where two sprites (or a sprite and the grey)
# blend after H.264 (red beside blue reads as magenta) and slivers thinner than 2r+1 are not seen.
ERODE = 2
DARKEST = 0.65  # a sprite's pattern scales its colour by DARKEST..1


# -- the detector ------------------------------------------------------------------------------

_LABELS = [COLOURS[name][1] for name in COLOUR_ORDER]


def _erode(mask: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """A boolean mask eroded along `dim`: a pixel stays when every pixel within `radius` of it
    along that axis is set (outside the frame counts as set, as OpenCV's erode)."""
    n = mask.size(dim)
    shape: List[int] = list(mask.size())
    shape[dim] = radius
    edge = torch.ones(shape, dtype=torch.bool)
    padded = torch.cat([edge, mask, edge], dim)
    out = padded.narrow(dim, 0, n)
    for k in range(1, 2 * radius + 1):
        out = out & padded.narrow(dim, k, n)
    return out


class SpriteDetector(torch.nn.Module):
    """RGB [3, H, W] float 0..255 -> boxes [N, 4], labels [N], scores [N]: one box per colour
    present, its pixel extent. A pixel is of a colour when its hue margin exceeds MARGIN (red:
    r - max(g, b), ...); each colour's mask is eroded by ERODE pixels, its extent taken and grown
    back by ERODE (within the frame)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("labels", torch.tensor(_LABELS, dtype=torch.int64))
        self.margin = MARGIN
        self.erode = ERODE
        self.score = SCORE

    def forward(self, rgb: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, w = rgb.size(1), rgb.size(2)
        r, g, b = rgb[0], rgb[1], rgb[2]
        margins = torch.stack([
            r - torch.maximum(g, b),  # red
            torch.minimum(r, b) - g,  # magenta
            g - torch.maximum(r, b),  # green
            b - torch.maximum(r, g),  # blue
            torch.minimum(r, g) - b,  # yellow
        ])
        masks = margins > self.margin  # [C, H, W]
        kept = _erode(_erode(masks, self.erode, 2), self.erode, 1)  # a square, as two passes
        rows = kept.any(2)  # [C, H]
        cols = kept.any(1)  # [C, W]
        present = rows.any(1) & cols.any(1)
        ys = torch.arange(h, dtype=torch.int64).unsqueeze(0)
        xs = torch.arange(w, dtype=torch.int64).unsqueeze(0)
        y1 = (torch.where(rows, ys, h).min(1).values - self.erode).clamp(min=0)
        y2 = (torch.where(rows, ys, -1).max(1).values + 1 + self.erode).clamp(max=h)
        x1 = (torch.where(cols, xs, w).min(1).values - self.erode).clamp(min=0)
        x2 = (torch.where(cols, xs, -1).max(1).values + 1 + self.erode).clamp(max=w)
        boxes = torch.stack([x1, y1, x2, y2], 1).to(torch.float32)[present]
        found = self.labels[present]
        scores = torch.full((int(found.size(0)),), self.score, dtype=torch.float32)
        return boxes, found, scores


class SeedSprites(torch.nn.Module):
    """The seed's contract (`fasterrcnn`): FP32 [3, H, W] RGB 0..1 in; boxes [N, 4], labels [N],
    scores [N] out."""

    def __init__(self):
        super().__init__()
        self.detector = SpriteDetector()

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if image.dim() != 3 or image.size(0) != 3 or image.size(1) == 0 or image.size(2) == 0:
            return (torch.zeros((0, 4), dtype=torch.float32), torch.zeros((0,), dtype=torch.int64),
                    torch.zeros((0,), dtype=torch.float32))
        return self.detector(image * 255.0)


class U8Sprites(torch.nn.Module):
    """The u8 contract (`fasterrcnn_u8`): uint8 [B, H, W, 3] in; per frame K rows of boxes [B, K, 4],
    labels [B, K], scores [B, K] (zero padded) and the count of valid rows [B, 1] out."""

    def __init__(self, k: int):
        super().__init__()
        self.detector = SpriteDetector()
        self.k = k

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n = images.size(0)
        boxes = torch.zeros((n, self.k, 4), dtype=torch.float32)
        labels = torch.zeros((n, self.k), dtype=torch.int64)
        scores = torch.zeros((n, self.k), dtype=torch.float32)
        count = torch.zeros((n, 1), dtype=torch.int32)
        if images.dim() != 4 or images.size(3) != 3 or images.size(1) == 0 or images.size(2) == 0 or n == 0:
            return boxes, labels, scores, count
        for i in range(n):
            b, lab, s = self.detector(images[i].permute(2, 0, 1).to(torch.float32))
            m = min(int(s.size(0)), self.k)
            boxes[i, :m] = b[:m]
            labels[i, :m] = lab[:m]
            scores[i, :m] = s[:m]
            count[i, 0] = m
        return boxes, labels, scores, count


class SeedEmpty(torch.nn.Module):
    """The seed's contract answering every frame with no detection, at almost no cost: for tests
    of the plumbing (order, timing, faults, outputs), where the boxes do not matter."""

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (torch.zeros((0, 4), dtype=torch.float32), torch.zeros((0,), dtype=torch.int64),
                torch.zeros((0,), dtype=torch.float32))


class U8Empty(torch.nn.Module):
    """The u8 contract answering every frame with no detection (K zero rows, count 0)."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n = images.size(0)
        return (torch.zeros((n, self.k, 4), dtype=torch.float32), torch.zeros((n, self.k), dtype=torch.int64),
                torch.zeros((n, self.k), dtype=torch.float32), torch.zeros((n, 1), dtype=torch.int32))


def empty_modules() -> Tuple[torch.jit.ScriptModule, torch.jit.ScriptModule]:
    """The scripted empty detector (SeedEmpty, U8Empty): (fasterrcnn, fasterrcnn_u8)."""
    from streamer import contract

    return torch.jit.script(SeedEmpty().eval()), torch.jit.script(U8Empty(contract.DEFAULT_MAX_DETECTIONS).eval())


def export_empty(repo: Path) -> Path:
    """The empty detector written as an export would write a model."""
    return export_sprites(repo, modules=empty_modules(), arch="empty (test detector: never detects)")


def build_modules(max_detections: int = 100) -> Tuple[torch.jit.ScriptModule, torch.jit.ScriptModule]:
    """The scripted (fasterrcnn, fasterrcnn_u8) modules."""
    return torch.jit.script(SeedSprites().eval()), torch.jit.script(U8Sprites(max_detections).eval())


def export_sprites(repo: Path, max_queue_delay_us: Optional[int] = None,
                   modules: Optional[Tuple[torch.jit.ScriptModule, torch.jit.ScriptModule]] = None,
                   arch: str = "sprites (test detector: colour masks)") -> Path:
    """Write the sprite detector into `repo` as an export would: fasterrcnn and fasterrcnn_u8, each
    <name>/1/model.pt, <name>/config.pbtxt and <name>/configs/gpu.pbtxt (streamer.contract's text,
    COCO class names from torchvision's weights meta). `max_queue_delay_us`: make fasterrcnn_u8
    slow without using CPU: Triton's dynamic batcher holds a lone request that long waiting for
    batch mates that never come (a model far slower than a camera). `modules`: other scripted
    (fasterrcnn, fasterrcnn_u8) modules to write under the same configs (a broken model, the empty
    one), `arch` what the model's facts call them."""
    from streamer import contract, export

    repo = Path(repo)
    k = contract.DEFAULT_MAX_DETECTIONS
    seed, u8 = modules or build_modules(k)
    model_facts = dict(arch=arch, weights="none (colour -> label)",
                       untrained=False, class_names=export.class_names(contract.DEFAULT_ARCH), min_size=0,
                       max_size=0, proposals=0, box_score_thresh=SCORE)
    for served, module in ((contract.SEED, seed), (contract.U8, u8)):
        export.self_check(module, served, k)
        model_dir = repo / served.name
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        export.save_model(module, model_dir / "1" / contract.MODEL_FILENAME, model_facts)
        text = contract.render_config(max_detections=k, model=served)
        if max_queue_delay_us and served.max_batch_size > 0:
            old = f"max_queue_delay_microseconds: {contract.MAX_QUEUE_DELAY_US} }}"
            assert old in text
            text = text.replace(old, f"max_queue_delay_microseconds: {int(max_queue_delay_us)} }}")
            contract.parse_config(text)
        (model_dir / contract.CONFIG_FILENAME).write_text(text)
        (model_dir / contract.CONFIGS_DIR).mkdir(exist_ok=True)
        (model_dir / contract.CONFIGS_DIR / f"{contract.GPU_CONFIG_NAME}.pbtxt").write_text(
            contract.render_config(max_detections=k, kind="KIND_GPU", model=served))
    return repo


def detect(image: np.ndarray) -> List[Tuple[int, np.ndarray]]:
    """What the detector finds in an RGB uint8 image, in numpy (the same rules): (label, box)."""
    img = image.astype(np.int32)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    margins = [r - np.maximum(g, b), np.minimum(r, b) - g, g - np.maximum(r, b), b - np.maximum(r, g),
               np.minimum(r, g) - b]
    found = []
    for name, margin in zip(COLOUR_ORDER, margins):
        box = extent(margin > MARGIN)
        if box is not None:
            found.append((COLOURS[name][1], box))
    return found


def extent(mask: np.ndarray) -> Optional[np.ndarray]:
    """The box of a mask's parts at least 2 * ERODE + 1 pixels thick (None: no such part)."""
    size = 2 * ERODE + 1
    kept = cv2.erode(mask.astype(np.uint8), np.ones((size, size), np.uint8)) > 0
    rows, cols = np.flatnonzero(kept.any(1)), np.flatnonzero(kept.any(0))
    if not len(rows):
        return None
    h, w = mask.shape
    return np.array([max(0, cols[0] - ERODE), max(0, rows[0] - ERODE), min(w, cols[-1] + 1 + ERODE),
                     min(h, rows[-1] + 1 + ERODE)], np.float64)


# -- scenes ------------------------------------------------------------------------------------

Box = Tuple[float, float, float, float]


@dataclass
class Sprite:
    key: str  # which object (the truth's name for it)
    colour: str  # a key of COLOURS
    path: Callable[[int], Optional[Box]]  # frame index -> box (unclipped), None: not drawn
    flat: bool = False  # one plain colour, no pattern: nothing for optical flow to follow

    @property
    def label(self) -> int:
        return COLOURS[self.colour][1]


@dataclass
class Scene:
    name: str
    frames: int
    sprites: List[Sprite]
    cuts: Sequence[int] = ()  # frames that start a new shot: another background
    occluders: Sequence[Tuple[Box, Tuple[int, int]]] = ()  # grey bars over the sprites: (box, (first, last))
    width: int = 640
    height: int = 480
    rate: int = 25
    seed: int = 0


@dataclass
class Truth:
    """Per frame: sprite key -> (label, visible extent [x1, y1, x2, y2])."""

    boxes: List[Dict[str, Tuple[int, np.ndarray]]] = field(default_factory=list)
    shots: List[int] = field(default_factory=list)  # per frame: its shot's number (0, 1, ...)


def background(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth grey texture with fine grain (structure for optical flow and the cut test)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1), dtype=np.uint8)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    grey = np.clip(smooth // 2 + 64 + rng.integers(-20, 21, (height, width)), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _pattern(colour: str) -> np.ndarray:
    rng = np.random.default_rng(COLOUR_ORDER.index(colour) + 7)
    coarse = rng.uniform(DARKEST, 1.0, (12, 12)).astype(np.float32)
    return coarse


def _code(img: np.ndarray, index: int) -> None:
    for bit in range(CODE_BITS):
        img[0:CELL, bit * CELL:(bit + 1) * CELL] = 255 if (index >> bit) & 1 else 0


def render(scene: Scene) -> Tuple[List[np.ndarray], Truth]:
    """The scene's RGB frames (index code on top) and its truth."""
    w, h = scene.width, scene.height
    frames, truth = [], Truth()
    backgrounds: Dict[int, np.ndarray] = {}
    for i in range(scene.frames):
        shot = sum(1 for c in scene.cuts if c <= i)
        if shot not in backgrounds:
            backgrounds[shot] = background(w, h, 1000 + 17 * scene.seed + shot)
        img = backgrounds[shot].copy()
        owner = np.full((h, w), -1, np.int16)  # which sprite each pixel shows
        for n, sprite in enumerate(scene.sprites):
            box = sprite.path(i)
            if box is None:
                continue
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            cx1, cy1, cx2, cy2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
            if cx2 <= cx1 or cy2 <= cy1:
                continue
            pattern = np.ones((2, 2), np.float32) if sprite.flat else _pattern(sprite.colour)
            shade = cv2.resize(pattern, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
            shade = shade[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
            rgb = np.array(COLOURS[sprite.colour][0], np.float32)
            img[cy1:cy2, cx1:cx2] = np.clip(shade[..., None] * rgb, 0, 255).astype(np.uint8)
            owner[cy1:cy2, cx1:cx2] = n
        for box, (first, last) in scene.occluders:
            if first <= i <= last:
                x1, y1, x2, y2 = (int(v) for v in box)
                img[y1:y2, x1:x2] = 90
                owner[y1:y2, x1:x2] = -1
        _code(img, i)
        owner[0:CELL, 0:CODE_BITS * CELL] = -1
        seen: Dict[str, Tuple[int, np.ndarray]] = {}
        for n, sprite in enumerate(scene.sprites):
            box = extent(owner == n)
            if box is not None:
                seen[sprite.key] = (sprite.label, box)
        frames.append(img)
        truth.boxes.append(seen)
        truth.shots.append(shot)
    return frames, truth


def write_scene(path: Path, scene: Scene) -> Truth:
    """Write the scene as an H.264 mp4 (PyAV, `scene.rate` fps); returns its truth."""
    frames, truth = render(scene)
    write_clip(Path(path), len(frames), scene.width, scene.height, rate=Fraction(scene.rate),
               image_fn=lambda i, _w, _h: frames[i])
    return truth


def _box(cx: float, cy: float, w: float, h: float) -> Box:
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def straight(frames: int = 61) -> Scene:
    return Scene("straight", frames, [
        Sprite("a", "red", lambda i: _box(60 + 8 * i, 150 + 1.5 * i, 70, 90)),
        Sprite("b", "green", lambda i: _box(560 - 6 * i, 360, 90, 60)),
    ])


def turning(frames: int = 61) -> Scene:
    """One sprite on a circle (about 8 px a frame), one on an S-curve that grows (they never meet)."""
    return Scene("turning", frames, [
        Sprite("a", "red", lambda i: _box(400 + 120 * math.cos(0.07 * i), 260 + 120 * math.sin(0.07 * i), 70, 80)),
        Sprite("b", "blue", lambda i: _box(120 + 60 * math.sin(0.08 * i), 100 + 5.5 * i, 60 + 0.5 * i, 60 + 0.5 * i)),
    ])


def crossing(frames: int = 61) -> Scene:
    """Two persons (red, magenta) crossing: b passes in front of a, fully covering it around frame 32."""
    return Scene("crossing", frames, [
        Sprite("a", "red", lambda i: _box(80 + 8 * i, 200 + 1.0 * i, 70, 90)),
        Sprite("b", "magenta", lambda i: _box(592 - 8 * i, 264 - 1.0 * i, 70, 90)),
    ])


def leaving(frames: int = 91) -> Scene:
    """A car leaves on the right and comes back; a person stays in view."""
    def out_and_back(i: int) -> Box:
        x = 400 + 12 * i if i <= 30 else 400 + 12 * 30 - 12 * (i - 30)
        return _box(x, 200, 70, 70)
    return Scene("leaving", frames, [
        Sprite("a", "green", out_and_back),
        Sprite("b", "red", lambda i: _box(120 + 3 * i, 360, 80, 80)),
    ])


def occluded(frames: int = 61) -> Scene:
    """A person passes behind a grey bar (hidden for a few frames); a dog stays in view."""
    return Scene("occluded", frames, [
        Sprite("a", "red", lambda i: _box(60 + 9 * i, 240, 40, 80)),
        Sprite("b", "blue", lambda i: _box(500, 400 - 2 * i, 60, 50)),
    ], occluders=[((290, 150, 360, 330), (0, frames))])


def cut(frames: int = 50, at: int = 23) -> Scene:
    """A hard cut at `at`: the background changes and the sprites jump elsewhere."""
    return Scene("cut", frames, [
        Sprite("a", "red",
               lambda i: _box(100 + 6 * i, 200, 70, 90) if i < at else _box(500 - 5 * (i - at), 330, 80, 70)),
        Sprite("b", "green", lambda i: _box(500, 120 + 3 * i, 60, 60) if i < at else _box(150, 120 + 3 * i, 60, 60)),
    ], cuts=[at])


SCENES = {s.__name__: s for s in (straight, turning, crossing, leaving, occluded, cut)}


def counting(frames: int = 70) -> Scene:
    """Objects crossing counting lines on known paths (see COUNTING_ZONES, COUNTING_EXPECTED):
    two persons crossing each other on the door line (red right: out, magenta left: in); a car
    that goes down through the gate line, turns back up through it and down again (in 2, out 1);
    a dog crossing the fence line hidden behind a grey bar (in 1); a plain, untextured bicycle
    moving about 8.5 px a frame on a curve (its box is 40 px: a box-width between inferences at
    --infer-every 5) through the lane line (out 1) into the yard zone (entered 1)."""
    def car(i: int) -> Box:
        bottom = 250 + 6 * i if i <= 16 else 346 - 6 * (i - 16) if i <= 30 else min(358, 262 + 6 * (i - 30))
        return (120, bottom - 40, 180, bottom)

    return Scene("counting", frames, [
        Sprite("red", "red", lambda i: _box(100 + 8 * i, 170, 50, 70)),
        Sprite("magenta", "magenta", lambda i: _box(540 - 8 * i, 190, 50, 70)),
        Sprite("car", "green", car),
        Sprite("dog", "blue", lambda i: _box(300 + 8 * i, 396, 56, 48)),
        Sprite("bicycle", "yellow", lambda i: _box(380 + 8 * i, 75 + 30 * math.sin(0.1 * i), 40, 40), flat=True),
    ], occluders=[((430, 340, 510, 470), (0, frames))])


COUNTING_ZONES = """\
lines:
  door: {points: [[320, 40], [320, 260]], classes: [person]}
  gate: {points: [[40, 300], [300, 300]]}
  fence: {points: [[470, 470], [470, 300]]}
  lane: {points: [["78.125%", 40], [500, "50%"]], classes: [bicycle]}
zones:
  yard: {points: [[540, 20], [640, 20], [640, 130], [540, 130]]}
"""
# What the paths of counting() give (lane is drawn from (500, 40) down to (500, 240): `in` is leftwards).
COUNTING_EXPECTED = {
    "lines": {"door": {"in": {"person": 1}, "out": {"person": 1}}, "gate": {"in": {"car": 2}, "out": {"car": 1}},
              "fence": {"in": {"dog": 1}, "out": {}}, "lane": {"in": {}, "out": {"bicycle": 1}}},
    "entered": {"yard": {"bicycle": 1}},
}


def camera(frames: int = 450) -> Scene:
    """For a live camera (384x288, 25 fps, no cut): a person on a circle (3.5 px a frame, once
    round every 5 s) and a car on a slow loop of its own (about 2 px a frame), apart from each
    other and below the index code."""
    return Scene("camera", frames, [
        Sprite("a", "red", lambda i: _box(130 + 70 * math.cos(0.05 * i), 170 + 70 * math.sin(0.05 * i), 44, 54)),
        Sprite("b", "green", lambda i: _box(300 + 40 * math.sin(0.03 * i), 170 + 80 * math.sin(0.02 * i), 50, 40)),
    ], width=384, height=288)


# -- measuring -----------------------------------------------------------------------------------

def iou(a: Sequence[float], b: Sequence[float]) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(truth: Dict[str, Tuple[int, np.ndarray]],
          detections: Sequence[dict]) -> Dict[str, Tuple[float, Optional[int]]]:
    """Per visible sprite: (IoU, track id) of the box of its label that overlaps it most, each box
    serving one sprite, best pairs first ((0.0, None) when none overlaps). `detections`: JSONL
    items ({"label", "box", "track_id"?})."""
    out: Dict[str, Tuple[float, Optional[int]]] = {key: (0.0, None) for key in truth}
    pairs = [(iou(box, d["box"]), key, n) for key, (label, box) in truth.items()
             for n, d in enumerate(detections) if d["label"] == label]
    used_keys, used_rows = set(), set()
    for value, key, n in sorted(pairs, key=lambda p: -p[0]):
        if value <= 0 or key in used_keys or n in used_rows:
            continue
        out[key] = (value, detections[n].get("track_id"))
        used_keys.add(key)
        used_rows.add(n)
    return out


def switches(ids: Sequence[Optional[int]]) -> int:
    """How often an id sequence changes between two frames that have one."""
    count, last = 0, None
    for tid in ids:
        if tid is None:
            continue
        if last is not None and tid != last:
            count += 1
        last = tid
    return count


def inferred_frames(count: int, every: int, cuts: Sequence[int] = ()) -> List[int]:
    """The frames `--infer-every N` infers: 0, N, 2N, ..., each cut and the last."""
    return sorted(set(range(0, count, every)) | set(cuts) | {count - 1})
