"""The mosaic of several cameras: pure functions from tiles to one new RGB image (no window code).

Cameras are laid out on the smallest near-square grid that holds them (`grid`). Each tile is
a title bar with the camera's name above its picture area; the picture is letterboxed into
that area (aspect ratio kept, black bars), the camera's HUD lines drawn small in its top-left
corner and its own banner (e.g. OFFLINE) across its middle. A camera without a frame yet gets
a dark picture area saying "waiting for frames". Tiles are separated by a thin gray gap.
Nothing is drawn on the inputs. `tile_rect` and `picture_rect` say where things land, for
callers that map clicks or read a tile back from a screenshot.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

from .render import FONT, draw_hud

Size = Tuple[int, int]  # (width, height)
Rect = Tuple[int, int, int, int]  # (x, y, width, height)

DEFAULT_TILE_SIZE: Size = (640, 360)
MIN_TILE_SIDE = 32
GAP = 2  # pixels between tiles
GAP_COLOR = (96, 96, 96)
UNUSED_COLOR = (0, 0, 0)  # cells of the grid without a camera
BAR_COLOR = (40, 40, 40)  # the title bar behind the name
NAME_COLOR = (255, 255, 255)
WAITING_COLOR = (24, 24, 24)  # the picture area of a camera without a frame yet
WAITING_TEXT = "waiting for frames"
WAITING_TEXT_COLOR = (170, 170, 170)


class Tile(NamedTuple):
    image: Optional[np.ndarray]  # RGB uint8 H x W x 3; None before the camera's first frame
    name: str
    hud_lines: Sequence[str] = ()
    banner: Optional[str] = None  # e.g. "OFFLINE", on this tile only


def grid(n: int) -> Tuple[int, int]:
    """(rows, cols) of the smallest near-square grid that holds n tiles, never taller than wide:
    1 -> 1x1, 2 -> 1x2, 3-4 -> 2x2, 5-6 -> 2x3, 7-9 -> 3x3, 10-12 -> 3x4 ..."""
    if n < 1:
        raise ValueError(f"a mosaic needs at least one tile, not {n}")
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def mosaic_size(n: int, tile_size: Size = DEFAULT_TILE_SIZE, gap: int = GAP) -> Size:
    """(width, height) of the image `compose` returns for n tiles."""
    rows, cols = grid(n)
    w, h = tile_size
    return cols * w + (cols - 1) * gap, rows * h + (rows - 1) * gap


def tile_size_to_fit(n: int, size: Size, gap: int = GAP) -> Size:
    """The largest tile size whose mosaic of n tiles fits in `size` (width, height)."""
    rows, cols = grid(n)
    w = (size[0] - (cols - 1) * gap) // cols
    h = (size[1] - (rows - 1) * gap) // rows
    _check_tile_size((w, h))
    return w, h


def tile_rect(index: int, n: int, tile_size: Size = DEFAULT_TILE_SIZE, gap: int = GAP) -> Rect:
    """Where tile `index` (row by row) lies in the mosaic of n tiles."""
    if not 0 <= index < n:
        raise ValueError(f"tile {index} of {n}")
    return _cell_rect(index, grid(n)[1], tile_size, gap)


def _cell_rect(index: int, cols: int, tile_size: Size, gap: int) -> Rect:
    w, h = tile_size
    row, col = divmod(index, cols)
    return col * (w + gap), row * (h + gap), w, h


def title_bar_height(tile_size: Size) -> int:
    return int(min(40, max(14, round(tile_size[1] * 0.07))))


def letterbox_rect(image_size: Size, box: Size) -> Rect:
    """Where an image of `image_size` lands when fitted into `box`, aspect kept, centered."""
    iw, ih = image_size
    bw, bh = box
    scale = min(bw / iw, bh / ih)
    w = max(1, min(bw, round(iw * scale)))
    h = max(1, min(bh, round(ih * scale)))
    return (bw - w) // 2, (bh - h) // 2, w, h


def picture_rect(index: int, n: int, image_size: Size, tile_size: Size = DEFAULT_TILE_SIZE,
                 gap: int = GAP) -> Rect:
    """Where tile `index`'s picture (of `image_size`) lands in the mosaic."""
    tx, ty, tw, th = tile_rect(index, n, tile_size, gap)
    bar = title_bar_height(tile_size)
    x, y, w, h = letterbox_rect(image_size, (tw, th - bar))
    return tx + x, ty + bar + y, w, h


def _check_tile_size(tile_size: Size) -> None:
    w, h = tile_size
    if w < MIN_TILE_SIDE or h < MIN_TILE_SIDE:
        raise ValueError(f"a tile needs at least {MIN_TILE_SIDE}x{MIN_TILE_SIDE} pixels, not {w}x{h}")


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape[:2]:
        raise ValueError(f"a tile image must be RGB uint8 H x W x 3, not {image.dtype} {image.shape}")


def _text_fitting(text: str, width: int, height: int) -> Tuple[float, int, int, int]:
    """(scale, thickness, text width, text height) so that `text` fits in width x height."""
    (w1, h1), base1 = cv2.getTextSize(text or " ", FONT, 1.0, 1)
    scale = min(height / (h1 + base1), width / max(1, w1))
    thick = 2 if scale >= 0.8 else 1
    (tw, th), _ = cv2.getTextSize(text, FONT, scale, thick)
    return scale, thick, tw, th


def _filled(height: int, width: int, color) -> np.ndarray:
    """A new H x W x 3 image of one color (row-wise: numpy's per-pixel broadcast is 40x slower)."""
    out = np.empty((height, width, 3), np.uint8)
    out.reshape(height, width * 3)[:] = np.tile(np.asarray(color, np.uint8), width)
    return out


def _resized(image: np.ndarray, size: Size) -> np.ndarray:
    """`image` at `size`: halved by area averaging while it stays at least twice the target
    (fast, no aliasing), then bilinear. Never the input array itself."""
    w, h = size
    while image.shape[1] >= 2 * w and image.shape[0] >= 2 * h:
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if (image.shape[1], image.shape[0]) == (w, h):
        return image.copy()
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)


def _letterboxed(image: np.ndarray, box: Size) -> np.ndarray:
    bw, bh = box
    ih, iw = image.shape[:2]
    x, y, w, h = letterbox_rect((iw, ih), box)
    out = np.zeros((bh, bw, 3), np.uint8)
    out[y:y + h, x:x + w] = _resized(image, (w, h))
    return out


def _waiting(box: Size) -> np.ndarray:
    bw, bh = box
    out = _filled(bh, bw, WAITING_COLOR)
    scale, thick, tw, th = _text_fitting(WAITING_TEXT, int(bw * 0.8), max(8, bh // 12))
    cv2.putText(out, WAITING_TEXT, ((bw - tw) // 2, (bh + th) // 2), FONT, scale, WAITING_TEXT_COLOR, thick,
                cv2.LINE_AA)
    return out


def render_tile(tile: Tile, tile_size: Size = DEFAULT_TILE_SIZE) -> np.ndarray:
    """One tile: the name's title bar over the letterboxed picture with its HUD and banner."""
    _check_tile_size(tile_size)
    image, name, hud_lines, banner = tile
    w, h = tile_size
    bar = title_bar_height(tile_size)
    area = (w, h - bar)
    if image is None:
        picture = _waiting(area)
    else:
        _check_image(image)
        picture = _letterboxed(image, area)
    if hud_lines or banner:
        picture = draw_hud(picture, list(hud_lines), banner)
    out = np.empty((h, w, 3), np.uint8)
    out[:bar] = _filled(bar, w, BAR_COLOR)
    out[bar:] = picture
    pad = max(2, bar // 5)
    scale, thick, _, th = _text_fitting(name, w - 2 * pad, bar - 2 * pad)
    cv2.putText(out, name, (pad, (bar + th) // 2), FONT, scale, NAME_COLOR, thick, cv2.LINE_AA)
    return out


def compose(tiles: Sequence[Tile], tile_size: Size = DEFAULT_TILE_SIZE, gap: int = GAP) -> np.ndarray:
    """A new RGB image of `mosaic_size(len(tiles), tile_size, gap)` with every tile in grid order.

    Each tile is a `Tile` or a plain tuple (image or None, name, hud_lines, banner or None)."""
    if not tiles:
        raise ValueError("a mosaic needs at least one tile")
    if gap < 0:
        raise ValueError(f"the gap between tiles must be >= 0, not {gap}")
    _check_tile_size(tile_size)
    n = len(tiles)
    rows, cols = grid(n)
    width, height = mosaic_size(n, tile_size, gap)
    out = _filled(height, width, GAP_COLOR)
    for index in range(rows * cols):
        x, y, w, h = _cell_rect(index, cols, tile_size, gap)
        if index < n:
            out[y:y + h, x:x + w] = render_tile(Tile(*tiles[index]), tile_size)
        else:
            out[y:y + h, x:x + w] = UNUSED_COLOR
    return out
