"""Pictures of a training run, drawn with matplotlib (Agg): the cost curve and a gallery of errors.

matplotlib is what the course plots with. The figures are drawn on the Agg canvas directly
(no pyplot: no global state, no display needed, safe in any thread). Both functions write a
PNG atomically and return its size in pixels (width, height).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from deepnet.errors import InputError
from deepnet.fileio import atomic_write
from deepnet.paths import PNG_METADATA

DPI = 100
_INK = "#1e1e1e"
_LINE = "#1f77b4"  # matplotlib's first colour, the course's cost curve
_WRONG = "#c82828"


def _figure(width: int, height: int) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # slow import
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: str | os.PathLike) -> tuple[int, int]:
    def write(handle: Any) -> None:  # the marker lets deepnet replace its own picture later
        figure.savefig(handle, format="png", dpi=DPI, metadata=PNG_METADATA)

    atomic_write(path, write)
    width, height = figure.canvas.get_width_height()
    return int(width), int(height)


def _points(pixels: float) -> float:
    return pixels * 72 / DPI


def cost_title(
    *,
    model: str | None = None,
    data: str | None = None,
    dtype: str | None = None,
    learning_rate: float | None = None,
    train_accuracy: float | None = None,
    test_accuracy: float | None = None,
) -> str:
    """The cost plot's title: what was trained, on what, and how well (what is known of it).

    >>> cost_title(model="L-layer 12288-20-7-5-1", data="synthetic", dtype="float64",
    ...            learning_rate=0.0075, train_accuracy=1.0, test_accuracy=0.78)
    'L-layer 12288-20-7-5-1 on synthetic data, float64, learning rate 0.0075\\ntrain accuracy 1.000, test accuracy 0.780'
    """  # noqa: E501
    first = [model or "model"]
    if data:
        first[0] += f" on {data} data"
    first += [dtype] if dtype else []
    first += [f"learning rate {learning_rate:g}"] if learning_rate is not None else []
    second = [
        f"{name} accuracy {value:.3f}"
        for name, value in (("train", train_accuracy), ("test", test_accuracy))
        if value is not None
    ]
    if model is None and data is None and dtype is None and not second:
        return "Cost" if learning_rate is None else f"Learning rate = {learning_rate:g}"
    return ", ".join(first) + ("\n" + ", ".join(second) if second else "")


def cost_curve_figure(
    costs: Sequence[float],
    *,
    record_every: int = 100,
    learning_rate: float | None = None,
    title: str | None = None,
    size: tuple[int, int] = (640, 480),
    model: str | None = None,
    data: str | None = None,
    dtype: str | None = None,
    train_accuracy: float | None = None,
    test_accuracy: float | None = None,
    iterations: int | None = None,
    x_label: str = "iteration",
) -> Any:
    """The cost curve as a matplotlib Figure (cost i was recorded at i * record_every).

    The title names the model, the data (``"course"`` or ``"synthetic"``), the dtype and
    the final accuracies, from whichever of these are given (``title`` overrides it). The x
    axis runs to ``iterations``, the run's length, where given: a 2500-iteration run records
    its last cost at 2400 but its axis ends at 2500.
    """
    values = [float(c) for c in costs]
    if not values or not all(math.isfinite(v) for v in values):
        raise InputError("the cost curve needs at least one recorded cost, all finite")
    width, height = size
    if width < 200 or height < 150:
        raise InputError(f"the cost curve needs at least 200x150 pixels, got {width}x{height}")
    if record_every < 1:
        raise InputError(f"record_every must be at least 1, got {record_every}")
    last = (len(values) - 1) * record_every
    if iterations is not None and iterations < last:
        raise InputError(f"{len(values)} costs recorded every {record_every} need "
                         f"at least {last} iterations, got {iterations}")  # fmt: skip
    if title is None:
        title = cost_title(
            model=model, data=data, dtype=dtype, learning_rate=learning_rate,
            train_accuracy=train_accuracy, test_accuracy=test_accuracy,
        )  # fmt: skip
    figure = _figure(width, height)
    axes = figure.add_subplot()
    steps = np.arange(len(values)) * record_every
    axes.plot(steps, values, color=_LINE, linewidth=2, marker="o" if len(values) <= 60 else None,
              markersize=3)  # fmt: skip
    axes.set_xlim(0, max(iterations if iterations is not None else last, 1))
    axes.set_ylim(0, max(values) * 1.05 or 1.0)
    axes.grid(color="#e1e1e1")
    axes.set_axisbelow(True)
    axes.set_xlabel(x_label)
    axes.set_ylabel("cost")
    axes.set_title(title, fontsize=_points(15), color=_INK)
    figure.tight_layout()
    return figure


def cost_curve_png(
    costs: Sequence[float], path: str | os.PathLike, **options: Any
) -> tuple[int, int]:
    """Write :func:`cost_curve_figure` (same keyword options) to ``path`` as a PNG."""
    return _save(cost_curve_figure(costs, **options), path)


def gallery_png(
    images: np.ndarray,
    predicted: Sequence[int],
    true: Sequence[int],
    classes: Sequence[str],
    path: str | os.PathLike,
    *,
    probabilities: Sequence[float] | None = None,
    scale: int = 2,
    columns: int = 5,
    title: str | None = None,
) -> tuple[int, int]:
    """A grid of pictures (m, 64, 64, 3), each captioned with its predicted and true class.

    Each picture is shown pixel for pixel, enlarged ``scale`` times (no smoothing).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(
            f"gallery pictures must have shape (m, height, width, 3), got {images.shape}"
        )
    m = images.shape[0]
    if len(predicted) != m or len(true) != m:
        raise InputError(f"{m} pictures need {m} predicted and true labels")
    if scale < 1 or columns < 1:
        raise InputError("scale and columns must be at least 1")
    tile_w, tile_h = images.shape[2] * scale, images.shape[1] * scale
    lines = 3 if probabilities is not None else 2
    pad, caption, header = 12, 4 + 16 * lines, 32 if title else 0
    cols = max(1, min(columns, m))
    rows = max(1, math.ceil(m / cols))
    width = max(cols * (tile_w + pad) + pad, 260)
    height = header + rows * (tile_h + caption + pad) + pad
    figure = _figure(width, height)

    def text(x: float, y: float, line: str, **style: Any) -> None:
        # (x, y) in pixels from the top left, as the layout above is worked out.
        figure.text(x / width, 1 - y / height, line, color=style.pop("color", _INK), **style)

    if title:
        text(width / 2, 8, title, fontsize=_points(15), ha="center", va="top")
    if m == 0:
        text(width / 2, height / 2, "no mislabeled pictures", fontsize=_points(15),
             ha="center", va="center")  # fmt: skip
        return _save(figure, path)
    pixels = np.clip(np.rint(images.astype(np.float64)), 0, 255).astype(np.uint8)
    for i in range(m):
        x = pad + (i % cols) * (tile_w + pad)
        y = header + pad + (i // cols) * (tile_h + caption + pad)
        tile = pixels[i].repeat(scale, axis=0).repeat(scale, axis=1)
        figure.figimage(tile, xo=x, yo=height - y - tile_h, origin="upper", resize=False)
        captions = [(f"predicted: {classes[int(predicted[i])]}", _WRONG)]
        captions.append((f"true: {classes[int(true[i])]}", _INK))
        if probabilities is not None:
            captions.append((f"P({classes[1]}) = {float(probabilities[i]):.2f}", _INK))
        for k, (line, colour) in enumerate(captions):
            text(x, y + tile_h + 3 + 16 * k, line, color=colour, fontsize=_points(12), va="top")
    return _save(figure, path)
