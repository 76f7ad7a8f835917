"""The PNGs: drawn by matplotlib, at the size the functions report; bad input is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepnet.errors import InputError
from deepnet.plots import cost_curve_figure, cost_curve_png, cost_title, gallery_png


def test_cost_curve_is_a_png_of_the_stated_size(tmp_path: Path):
    costs = [0.77, 0.67, 0.5, 0.3, 0.2, 0.15]
    size = cost_curve_png(costs, tmp_path / "c.png", learning_rate=0.0075, size=(500, 400))
    with Image.open(tmp_path / "c.png") as image:
        assert image.format == "PNG" and image.size == size == (500, 400)
        assert image.info.get("Software", "").startswith("Matplotlib")
        pixels = np.asarray(image.convert("RGB"))
    assert (pixels == (31, 119, 180)).all(axis=-1).sum() > 100  # the curve was drawn
    assert cost_curve_png([0.5], tmp_path / "one.png") == (640, 480)


def test_cost_title_names_model_data_dtype_and_accuracies():
    figure = cost_curve_figure(
        [0.74, 0.5, 0.3],
        model="L-layer 12288-20-7-5-1",
        data="synthetic",
        dtype="float64",
        learning_rate=0.0075,
        train_accuracy=0.985646,
        test_accuracy=0.8,
    )
    title = figure.axes[0].get_title()
    for part in ("L-layer 12288-20-7-5-1", "synthetic data", "float64", "0.0075"):
        assert part in title
    assert "train accuracy 0.986" in title and "test accuracy 0.800" in title
    assert cost_title(learning_rate=0.0075) == "Learning rate = 0.0075"  # the course's title
    assert cost_title(model="two-layer", data="course") == "two-layer on course data"


def test_the_x_axis_reaches_the_last_iteration():
    costs = np.linspace(0.7, 0.1, 25)  # recorded at 0, 100, ..., 2400 of a 2500-iteration run
    axes = cost_curve_figure(costs, iterations=2500).axes[0]
    assert axes.get_xlim() == (0, 2500)
    line = axes.get_lines()[0]
    assert list(line.get_xdata()) == list(range(0, 2500, 100))
    assert cost_curve_figure(costs, record_every=10).axes[0].get_xlim() == (0, 240)
    assert cost_curve_figure(costs, x_label="epoch").axes[0].get_xlabel() == "epoch"


def test_cost_curve_refuses_bad_input(tmp_path: Path):
    for costs in ([], [0.5, float("nan")]):
        with pytest.raises(InputError):
            cost_curve_png(costs, tmp_path / "c.png")
    with pytest.raises(InputError):
        cost_curve_png([0.5], tmp_path / "c.png", size=(50, 50))
    with pytest.raises(InputError, match="at least 200 iterations"):
        cost_curve_png([0.5, 0.4, 0.3], tmp_path / "c.png", iterations=150)
    assert not (tmp_path / "c.png").exists()


def test_gallery_shows_each_picture_at_the_stated_size(tmp_path: Path):
    images = np.random.RandomState(0).randint(0, 256, (7, 64, 64, 3)).astype(np.uint8)
    size = gallery_png(
        images, [1] * 7, [0] * 7, ["non-cat", "cat"], tmp_path / "g.png", columns=3, scale=2
    )
    with Image.open(tmp_path / "g.png") as image:
        assert image.size == size and image.info.get("Software", "").startswith("Matplotlib")
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
