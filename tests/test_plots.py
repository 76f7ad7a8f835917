"""The PNGs: they open with Pillow at the size the functions report, and bad input is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepnet.errors import InputError
from deepnet.plots import cost_curve_png, gallery_png


def test_cost_curve_is_a_png_of_the_stated_size(tmp_path: Path):
    costs = [0.77, 0.67, 0.5, 0.3, 0.2, 0.15]
    size = cost_curve_png(costs, tmp_path / "c.png", learning_rate=0.0075, size=(500, 400))
    with Image.open(tmp_path / "c.png") as image:
        assert image.format == "PNG" and image.size == size == (500, 400)
        pixels = np.asarray(image.convert("RGB"))
    assert (pixels == (31, 119, 180)).all(axis=-1).sum() > 100  # the curve was drawn
    assert cost_curve_png([0.5], tmp_path / "one.png") == (640, 480)


def test_cost_curve_refuses_bad_input(tmp_path: Path):
    for costs in ([], [0.5, float("nan")]):
        with pytest.raises(InputError):
            cost_curve_png(costs, tmp_path / "c.png")
    with pytest.raises(InputError):
        cost_curve_png([0.5], tmp_path / "c.png", size=(50, 50))
    assert not (tmp_path / "c.png").exists()


def test_gallery_shows_each_picture_at_the_stated_size(tmp_path: Path):
    images = np.random.RandomState(0).randint(0, 256, (7, 64, 64, 3)).astype(np.uint8)
    size = gallery_png(
        images, [1] * 7, [0] * 7, ["non-cat", "cat"], tmp_path / "g.png", columns=3, scale=2
    )
    with Image.open(tmp_path / "g.png") as image:
        assert image.size == size
        pixels = np.asarray(image.convert("RGB"))
    assert size[0] == 3 * (128 + 12) + 12  # three columns of 128-pixel tiles
    np.testing.assert_array_equal(pixels[12 : 12 + 128 : 2, 12 : 12 + 128 : 2], images[0])


def test_empty_gallery_says_so(tmp_path: Path):
    size = gallery_png(np.zeros((0, 64, 64, 3), np.uint8), [], [], ["a", "b"], tmp_path / "e.png")
    with Image.open(tmp_path / "e.png") as image:
        assert image.size == size


def test_gallery_refuses_mismatched_labels(tmp_path: Path):
    with pytest.raises(InputError, match="2 pictures need 2"):
        gallery_png(np.zeros((2, 64, 64, 3)), [1], [0, 1], ["a", "b"], tmp_path / "g.png")
