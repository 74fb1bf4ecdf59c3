"""streamer.mosaic: the grid, letterboxing, names, HUD and banners per tile, read from pixels."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.mosaic import (
    BAR_COLOR,
    GAP_COLOR,
    WAITING_COLOR,
    Tile,
    compose,
    grid,
    mosaic_size,
    picture_rect,
    render_tile,
    tile_rect,
    tile_size_to_fit,
    title_bar_height,
)

TILE = (320, 240)


def solid(w: int, h: int, color=(128, 128, 128)) -> np.ndarray:
    return np.full((h, w, 3), color, np.uint8)


def crop(image: np.ndarray, rect) -> np.ndarray:
    x, y, w, h = rect
    return image[y:y + h, x:x + w]


def red_pixels(image: np.ndarray) -> int:
    """Pixels of the banner's red (200, 20, 20)."""
    r, g, b = (image[..., i].astype(int) for i in range(3))
    return int(np.count_nonzero((r > 170) & (g < 60) & (b < 60)))


def bounding_box(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


@pytest.mark.parametrize("n, expected", [(1, (1, 1)), (2, (1, 2)), (3, (2, 2)), (4, (2, 2)), (5, (2, 3)),
                                         (6, (2, 3)), (7, (3, 3)), (9, (3, 3)), (10, (3, 4)), (13, (4, 4))])
def test_grid_fits_n_tiles_without_an_empty_row(n, expected):
    rows, cols = grid(n)
    assert (rows, cols) == expected
    assert rows * cols >= n > (rows - 1) * cols and rows <= cols


def test_grid_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        grid(0)
    with pytest.raises(ValueError):
        compose([])


def test_compose_returns_a_new_image_of_the_mosaic_size_and_leaves_inputs_untouched():
    images = [solid(320, 240, (10, 200, 10)), solid(160, 120, (10, 10, 200)), solid(320, 180)]
    before = [im.copy() for im in images]
    tiles = [(images[0], "front", ["display 25 fps"], None), (images[1], "garage", [], "OFFLINE"),
             (images[2], "yard", ["a", "b"], None)]
    out = compose(tiles, TILE)
    assert out.dtype == np.uint8 and out.shape == (2 * 240 + 2, 2 * 320 + 2, 3)
    assert (out.shape[1], out.shape[0]) == mosaic_size(3, TILE)
    for im, b in zip(images, before):
        np.testing.assert_array_equal(im, b)
        assert not np.shares_memory(out, im)
    # The gap between tiles and the unused fourth cell.
    assert (out[:, 320:322] == GAP_COLOR).all()
    assert (crop(out, tile_rect(3, 4, TILE)) == 0).all()


def test_the_offline_banner_is_on_its_own_tile_only():
    tiles = [Tile(solid(320, 240), "a", ["live"]), Tile(solid(320, 240), "b", ["offline"], "OFFLINE"),
             Tile(solid(320, 240), "c", ["live"]), Tile(None, "d")]
    out = compose(tiles, TILE)
    reds = [red_pixels(crop(out, tile_rect(i, 4, TILE))) for i in range(4)]
    assert reds[1] > 320 * 10, reds  # a band across the tile
    assert reds[0] == reds[2] == reds[3] == 0, reds
    # A banner on a camera without a frame yet is drawn too.
    assert red_pixels(compose([Tile(None, "d", [], "OFFLINE")], TILE)) > 320 * 10


@pytest.mark.parametrize("image_size", [(400, 100), (100, 400), (320, 240), (64, 48), (1, 1), (7, 3), (1919, 1081), (2000, 500)])
def test_letterboxing_keeps_the_aspect_ratio_with_black_bars(image_size):
    iw, ih = image_size
    tile = render_tile(Tile(solid(iw, ih, (255, 255, 255)), ""), TILE)
    bar = title_bar_height(TILE)
    picture = tile[bar:]
    x, y, w, h = bounding_box(picture.min(axis=2) > 128)
    assert (x, y + bar, w, h) == picture_rect(0, 1, image_size, TILE, gap=0)
    assert w == TILE[0] or h == TILE[1] - bar, "fills the area along one side"
    assert abs(w / h - iw / ih) <= max(1 / h, 1 / w) * (iw / ih) * 1.01 + 1e-9
    outside = np.ones(picture.shape[:2], bool)
    outside[y:y + h, x:x + w] = False
    assert (picture[outside] == 0).all(), "the bars are black"


def test_picture_rect_says_where_each_picture_lands():
    colors = [(200, 40, 200), (40, 200, 200), (250, 250, 0)]
    images = [solid(160, 120, colors[0]), solid(90, 160, colors[1]), solid(300, 100, colors[2])]
    out = compose([(im, f"cam{i}", [], None) for i, im in enumerate(images)], TILE)
    for i, (im, color) in enumerate(zip(images, colors)):
        mask = (np.abs(out.astype(int) - color).sum(axis=2) < 12)
        assert bounding_box(mask) == picture_rect(i, 3, (im.shape[1], im.shape[0]), TILE)


def test_the_name_is_drawn_in_the_title_bar():
    image = solid(320, 240)
    front = render_tile(Tile(image, "front", ["live"]), TILE)
    garage = render_tile(Tile(image, "garage", ["live"]), TILE)
    bar = title_bar_height(TILE)
    diff = np.any(front != garage, axis=2)
    assert diff[:bar].sum() > 50, "the names differ where they are written"
    assert not diff[bar:].any(), "and nowhere else"
    assert (front[:bar] > 200).all(axis=2).sum() > 30, "white text"
    assert (front[:bar] == BAR_COLOR).all(axis=2).sum() > front[:bar].shape[0] * front.shape[1] // 2
    # In a mosaic, each name stays in its own tile.
    out_a = compose([(image, "front", [], None), (image, "garage", [], None)], TILE)
    out_b = compose([(image, "front", [], None), (image, "porch", [], None)], TILE)
    changed = np.any(out_a != out_b, axis=2)
    assert not crop(changed, tile_rect(0, 2, TILE)).any() and crop(changed, tile_rect(1, 2, TILE)).any()


def test_hud_lines_are_drawn_top_left_of_the_picture():
    image = solid(320, 240, (0, 160, 0))
    plain = render_tile(Tile(image, "front"), TILE)
    hud = render_tile(Tile(image, "front", ["display 25.0 fps", "live"]), TILE)
    bar = title_bar_height(TILE)
    x, y, w, h = bounding_box(np.any(plain != hud, axis=2))
    assert y >= bar and x < 10 and y < bar + 10, "the panel starts at the picture's top-left corner"
    assert w < TILE[0] and h < (TILE[1] - bar) // 2, "small"


def test_a_camera_without_a_frame_gets_a_dark_tile_saying_so():
    tile = render_tile(Tile(None, "garage"), TILE)
    bar = title_bar_height(TILE)
    picture = tile[bar:]
    dark = (picture == WAITING_COLOR).all(axis=2)
    assert dark.mean() > 0.9, "mostly the dark waiting color"
    ph, pw = picture.shape[:2]
    x, y, w, h = bounding_box(~dark)
    assert abs((x + w / 2) - pw / 2) < 4 and abs((y + h / 2) - ph / 2) < 8, "the text is centred"
    assert w > pw // 2, "a line of text, readable"
    # The name is there as on any tile.
    other = render_tile(Tile(None, "front"), TILE)
    assert np.any(tile[:bar] != other[:bar]) and np.array_equal(tile[bar:], other[bar:])


@pytest.mark.parametrize("tile_size", [(33, 33), (101, 77), (333, 201), (641, 359)])
def test_odd_sizes(tile_size):
    tiles = [(solid(7, 3), "a", ["display 25.0 fps (source 25.0) | detections 8.8/s"], "OFFLINE"),
             (solid(101, 77), "a much longer camera name than fits", ["x"], None),
             (None, "c", [], None), (solid(1, 1), "d", [], None), (solid(1919, 1081), "e", [], None)]
    out = compose(tiles, tile_size, gap=1)
    assert (out.shape[1], out.shape[0]) == mosaic_size(5, tile_size, gap=1)
    assert out.shape == (2 * tile_size[1] + 1, 3 * tile_size[0] + 2, 3)


def test_tile_size_to_fit_a_screen():
    assert tile_size_to_fit(4, (1280, 720)) == (639, 359)
    assert mosaic_size(4, tile_size_to_fit(4, (1280, 720))) == (1280, 720)
    w, h = mosaic_size(5, tile_size_to_fit(5, (1920, 1080)))
    assert w <= 1920 and h <= 1080


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError):
        compose([(np.zeros((10, 10), np.uint8), "gray", [], None)], TILE)
    with pytest.raises(ValueError):
        compose([(np.zeros((10, 10, 3), np.float32), "float", [], None)], TILE)
    with pytest.raises(ValueError):
        compose([(None, "tiny", [], None)], (20, 20))
