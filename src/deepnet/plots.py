"""Pictures of a training run, drawn with Pillow alone: the cost curve and a gallery of errors.

Both functions write a PNG atomically and return its size in pixels (width, height).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from deepnet.errors import InputError
from deepnet.fileio import atomic_write

_INK = (30, 30, 30)
_GRID = (225, 225, 225)
_LINE = (31, 119, 180)  # the blue of the course's matplotlib plots
_WRONG = (200, 40, 40)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def _save(image: Image.Image, path: str | os.PathLike) -> tuple[int, int]:
    atomic_write(path, lambda handle: image.save(handle, format="PNG"))
    return image.size


def _nice_step(span: float, target: int) -> float:
    """A 1, 2 or 5 times a power of ten, giving about ``target`` ticks over ``span``."""
    raw = span / max(target, 1)
    power = 10 ** math.floor(math.log10(raw))
    return next(k * power for k in (1, 2, 5, 10) if k * power >= raw)


def cost_curve_png(
    costs: Sequence[float],
    path: str | os.PathLike,
    *,
    record_every: int = 100,
    learning_rate: float | None = None,
    title: str | None = None,
    size: tuple[int, int] = (640, 480),
) -> tuple[int, int]:
    """Plot the recorded costs against the iteration (cost i was recorded at i * record_every)."""
    values = [float(c) for c in costs]
    if not values or not all(math.isfinite(v) for v in values):
        raise InputError("the cost curve needs at least one recorded cost, all finite")
    width, height = size
    if width < 200 or height < 150:
        raise InputError(f"the cost curve needs at least 200x150 pixels, got {width}x{height}")
    if title is None:
        title = "Learning rate = " + str(learning_rate) if learning_rate is not None else "Cost"
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(16), _font(12)
    left, right, top, bottom = 70, width - 20, 40, height - 50

    x_max = max((len(values) - 1) * record_every, 1)
    y_top = max(values) * 1.05 or 1.0
    x_step, y_step = _nice_step(x_max, 6), _nice_step(y_top, 6)

    def at(x: float, y: float) -> tuple[float, float]:
        return (left + (right - left) * x / x_max, bottom - (bottom - top) * y / y_top)

    for k in range(int(y_top / y_step) + 1):
        y = k * y_step
        _, py = at(0, y)
        draw.line([(left, py), (right, py)], fill=_GRID)
        draw.text((left - 8, py), f"{y:g}", fill=_INK, font=small, anchor="rm")
    for k in range(int(x_max / x_step) + 1):
        x = k * x_step
        px, _ = at(x, 0)
        draw.line([(px, bottom), (px, bottom + 5)], fill=_INK)
        draw.text((px, bottom + 8), f"{x:g}", fill=_INK, font=small, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline=_INK)
    points = [at(i * record_every, v) for i, v in enumerate(values)]
    if len(points) > 1:
        draw.line(points, fill=_LINE, width=2, joint="curve")
    for px, py in points if len(points) <= 60 else points[-1:]:
        draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=_LINE)
    draw.text((width / 2, 12), title, fill=_INK, font=font, anchor="mt")
    draw.text(((left + right) / 2, height - 8), "iteration", fill=_INK, font=font, anchor="mb")
    draw.text((8, (top + bottom) / 2), "cost", fill=_INK, font=font, anchor="lm")
    return _save(image, path)


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
    """A grid of pictures (m, 64, 64, 3), each captioned with its predicted and true class."""
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
    font, small = _font(15), _font(12)
    tile_w, tile_h = images.shape[2] * scale, images.shape[1] * scale
    lines = 3 if probabilities is not None else 2
    pad, caption, header = 12, 4 + 16 * lines, 32 if title else 0
    cols = max(1, min(columns, m))
    rows = max(1, math.ceil(m / cols))
    width = max(cols * (tile_w + pad) + pad, 260)
    height = header + rows * (tile_h + caption + pad) + pad
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((width / 2, 8), title, fill=_INK, font=font, anchor="mt")
    if m == 0:
        draw.text(
            (width / 2, height / 2), "no mislabeled pictures", fill=_INK, font=font, anchor="mm"
        )
        return _save(image, path)
    pixels = np.clip(np.rint(images.astype(np.float64)), 0, 255).astype(np.uint8)
    for i in range(m):
        x = pad + (i % cols) * (tile_w + pad)
        y = header + pad + (i // cols) * (tile_h + caption + pad)
        tile = Image.fromarray(pixels[i], "RGB").resize((tile_w, tile_h), Image.Resampling.NEAREST)
        image.paste(tile, (x, y))
        text = [(f"predicted: {classes[int(predicted[i])]}", _WRONG)]
        text.append((f"true: {classes[int(true[i])]}", _INK))
        if probabilities is not None:
            text.append((f"P({classes[1]}) = {float(probabilities[i]):.2f}", _INK))
        for k, (line, colour) in enumerate(text):
            draw.text((x, y + tile_h + 3 + 16 * k), line, fill=colour, font=small)
    return _save(image, path)
