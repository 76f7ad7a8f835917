"""A synthetic cat / non-cat set: the built-in stand-in when the course data is not around.

Same schema as the course files (209 train / 50 test uint8 pictures of 64x64x3, int64
labels, ``list_classes = [b'non-cat', b'cat']``, the same class balance), written in the same
HDF5 layout so :mod:`deepnet.data` reads it like the real thing. Its files carry the
attribute ``deepnet_synthetic = True``, so whatever reads them says it is synthetic.

The pictures are drawn shapes on noisy, darkish gradient backgrounds, with distractor boxes
in many pictures. A "cat" is a face with two pointed ears and two eyes; a "non-cat" is a
ball, a box or a house, each placed a few pixels off centre. Colour helps (cats are more
often warm-coloured) but does not decide: grey cats and orange non-cats are common, so a
model has to pick up the ears and eyes too. The set is about as hard as the course's: its
default run (the course's network, learning rate and 2500 iterations) lowers the cost at
every record and ends near the course's accuracies (train 1.0, test 0.78; the course: 0.985,
0.8), which tests/test_synthetic.py checks. Generation
uses only NumPy's legacy ``RandomState`` (whose stream NumPy keeps fixed) and exactly rounded
arithmetic, so the set is the same bytes on every machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from deepnet.constants import CLASSES, CLASSES_KEY, FILES, IMAGE_SHAPE, SYNTHETIC_ATTR
from deepnet.errors import DataError
from deepnet.fileio import atomic_write
from deepnet.hdf5 import read_split

VERSION = 2  # bump whenever the pictures change: the cache folder is named after it
SEED = 20_240_613
SPLITS = {"train": (209, 72), "test": (50, 33)}  # (pictures, cats): the course's counts

_SIZE = IMAGE_SHAPE[0]
_JITTER = (8, 6)  # how far (pixels) the subject's centre wanders from (32, 36)
_NOISE = 25.0  # pixel noise, standard deviation
_SHADE = (20, 140)  # background grey levels (pixel mean 0.34; the course's photos: 0.40)
_rows, _cols = np.mgrid[0:_SIZE, 0:_SIZE].astype(np.float64)
# (colour, weight): cats are more often warm, non-cats more often cool, but grey cats and
# orange non-cats are common, so colour alone gets many pictures wrong.
_CAT_COLOURS = [
    ((225, 140, 60), 4),
    ((150, 100, 60), 3),
    ((235, 205, 150), 2),
    ((110, 110, 115), 4),
]
_OTHER_COLOURS = [
    ((60, 90, 200), 3),
    ((70, 170, 80), 3),
    ((140, 70, 170), 2),
    ((110, 110, 115), 2),
    ((225, 140, 60), 3),
]


def cache_dir() -> Path:
    """Where the synthetic files live: ``$XDG_CACHE_HOME/deepnet`` or ``~/.cache/deepnet``."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(base).expanduser() if base else Path.home() / ".cache"
    return root / "deepnet" / f"synthetic-v{VERSION}"


def make_split(split: str, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """The pictures (m, 64, 64, 3) uint8 and labels (m,) int64 of one split, deterministically."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    m, cats = SPLITS[split]
    rng = np.random.RandomState([seed, list(SPLITS).index(split)])
    labels = np.zeros(m, dtype=np.int64)
    labels[rng.permutation(m)[:cats]] = 1
    images = np.empty((m, *IMAGE_SHAPE), dtype=np.uint8)
    for i in range(m):
        images[i] = _picture(rng, bool(labels[i]))
    return images, labels


def write_split(
    path: str | os.PathLike, split: str, images: np.ndarray, labels: np.ndarray
) -> Path:
    """Write one split in the course's HDF5 layout, marked synthetic, atomically."""

    def write(handle) -> None:
        with h5py.File(handle, "w") as f:
            f.create_dataset(f"{split}_set_x", data=images, dtype=np.uint8)
            f.create_dataset(f"{split}_set_y", data=labels, dtype=np.int64)
            f.create_dataset(CLASSES_KEY, data=np.array(CLASSES, dtype="S7"))
            f.attrs[SYNTHETIC_ATTR] = True
            f.attrs["deepnet_synthetic_version"] = VERSION
            f.attrs["description"] = "deepnet's synthetic cat/non-cat pictures (not photos)"

    return atomic_write(path, write)


def ensure_synthetic(folder: str | os.PathLike | None = None) -> Path:
    """The folder holding the synthetic files, generating them on first use.

    Files already there are reused when they load cleanly; damaged ones are rewritten.
    """
    root = Path(folder) if folder is not None else cache_dir()
    if all((root / name).is_file() for name in FILES.values()):
        try:
            if all(read_split(root / name, split).synthetic for split, name in FILES.items()):
                return root
        except DataError:
            pass  # damaged (say, an interrupted copy): write it again below
    try:
        for split, name in FILES.items():
            write_split(root / name, split, *make_split(split))
    except OSError as exc:
        raise DataError(
            f"cannot write the synthetic data to {root} ({exc.strerror or exc}); "
            "set XDG_CACHE_HOME to a writable folder"
        ) from None
    return root


def __getattr__(name: str):
    """``synthetic.load_synthetic`` lives in :mod:`deepnet.data` (it builds a Dataset); this
    alias keeps old callers working without this module importing deepnet.data."""
    if name == "load_synthetic":
        from deepnet.data import load_synthetic

        return load_synthetic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _pick(rng: np.random.RandomState, table: list) -> np.ndarray:
    weights = np.array([w for _, w in table], dtype=np.float64)
    index = rng.choice(len(table), p=weights / weights.sum())
    colour = np.array(table[index][0], dtype=np.float64)
    return np.clip(colour + rng.uniform(-20, 20, size=3), 0, 255)


def _paint(canvas: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return np.where(mask[..., None], colour, canvas)


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((_cols - cx) / rx) ** 2 + ((_rows - cy) / ry) ** 2 <= 1.0


def _triangle(points: list[tuple[float, float]]) -> np.ndarray:
    (x0, y0), (x1, y1), (x2, y2) = points
    d0 = (x1 - x0) * (_rows - y0) - (y1 - y0) * (_cols - x0)
    d1 = (x2 - x1) * (_rows - y1) - (y2 - y1) * (_cols - x1)
    d2 = (x0 - x2) * (_rows - y2) - (y0 - y2) * (_cols - x2)
    return ((d0 >= 0) & (d1 >= 0) & (d2 >= 0)) | ((d0 <= 0) & (d1 <= 0) & (d2 <= 0))


def _box(x0: float, y0: float, w: float, h: float) -> np.ndarray:
    return (_cols >= x0) & (_cols < x0 + w) & (_rows >= y0) & (_rows < y0 + h)


def _background(rng: np.random.RandomState) -> np.ndarray:
    # Muted backgrounds: a grey level with a mild tint, so the subject stands out.
    start, end = rng.uniform(*_SHADE, size=(2, 1)) + rng.uniform(-25, 25, size=(2, 3))
    dx, dy = rng.uniform(-1, 1, size=2)
    t = (dx * _cols + dy * _rows) / (_SIZE * (abs(dx) + abs(dy)) + 1e-9) + 0.5
    canvas = start + (end - start) * t[..., None]
    for _ in range(rng.randint(0, 3)):  # distractor boxes, in cat and non-cat pictures alike
        w, h = rng.uniform(5, 14, size=2)
        x0, y0 = rng.uniform(-4, _SIZE - 4, size=2)
        canvas = _paint(canvas, _box(x0, y0, w, h), rng.uniform(30, 230, size=3))
    return canvas


def _cat(canvas: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    cx, cy = _place(rng)
    r = rng.uniform(13, 16)
    fur = _pick(rng, _CAT_COLOURS)
    for side in (-1, 1):  # the ears: what only cats have
        ear = [(cx + side * 0.95 * r, cy - 0.35 * r), (cx + side * 0.2 * r, cy - 0.9 * r)]
        ear.append((cx + side * 0.8 * r, cy - 1.7 * r))
        canvas = _paint(canvas, _triangle(ear), fur)
    canvas = _paint(canvas, _ellipse(cx, cy, r * 1.05, r * 0.9), fur)
    iris = np.array([120, 200, 60], dtype=np.float64) + rng.uniform(-25, 25, size=3)
    for side in (-1, 1):
        ex, ey = cx + side * 0.42 * r, cy - 0.2 * r
        canvas = _paint(canvas, _ellipse(ex, ey, 0.2 * r, 0.16 * r), iris)
        canvas = _paint(canvas, _ellipse(ex, ey, 0.06 * r, 0.14 * r), np.full(3, 20.0))
    nose = [(cx - 0.12 * r, cy + 0.1 * r), (cx + 0.12 * r, cy + 0.1 * r), (cx, cy + 0.25 * r)]
    return _paint(canvas, _triangle(nose), np.array([230.0, 130.0, 150.0]))


def _non_cat(canvas: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    cx, cy = _place(rng)
    r = rng.uniform(13, 16)
    colour = _pick(rng, _OTHER_COLOURS)
    kind = rng.randint(3)
    if kind == 0:  # a ball, with a highlight
        canvas = _paint(canvas, _ellipse(cx, cy, r, r), colour)
        shine = np.clip(colour + 60, 0, 255)
        return _paint(canvas, _ellipse(cx - 0.4 * r, cy - 0.4 * r, 0.25 * r, 0.2 * r), shine)
    if kind == 1:  # a box with a lid
        canvas = _paint(canvas, _box(cx - r, cy - 0.8 * r, 2 * r, 1.7 * r), colour)
        return _paint(canvas, _box(cx - r, cy - 0.8 * r, 2 * r, 0.3 * r), colour * 0.6)
    roof = [(cx - 1.2 * r, cy - 0.3 * r), (cx + 1.2 * r, cy - 0.3 * r), (cx, cy - 1.4 * r)]
    canvas = _paint(canvas, _box(cx - r, cy - 0.3 * r, 2 * r, 1.3 * r), colour)
    canvas = _paint(canvas, _triangle(roof), np.array([160.0, 50.0, 40.0]))
    return _paint(canvas, _box(cx - 0.2 * r, cy + 0.4 * r, 0.4 * r, 0.6 * r), np.full(3, 60.0))


def _place(rng: np.random.RandomState) -> tuple[float, float]:
    dx, dy = _JITTER
    return 32 + rng.uniform(-dx, dx), 36 + rng.uniform(-dy, dy)


def _picture(rng: np.random.RandomState, is_cat: bool) -> np.ndarray:
    canvas = _background(rng)
    canvas = _cat(canvas, rng) if is_cat else _non_cat(canvas, rng)
    canvas = canvas + rng.normal(0.0, _NOISE, size=canvas.shape)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
