"""The course's cat / non-cat data: load, check and preprocess the two HDF5 files.

Layout (``train_catvnoncat.h5`` and ``test_catvnoncat.h5``): ``{split}_set_x`` holds m
pictures of 64x64 RGB pixels, uint8, shape (m, 64, 64, 3); ``{split}_set_y`` holds m labels
in {0, 1}; ``list_classes`` holds the two class names, ``[b'non-cat', b'cat']``.
Preprocessing, as in the course: each picture flattened in C order to a 12288-long column
(X is 12288 x m), then scaled to [0, 1] (divided by 255 for 0..255 values: see
:func:`pixel_scale`); labels become a (1, m) row.

The files are read by :mod:`deepnet.hdf5`, the one checked reader (special files, links,
external storage, declared sizes, compression bombs): every problem is a :class:`DataError`
naming the file and what is wrong with it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepnet.constants import (  # noqa: F401  (re-exported: deepnet.data.N_FEATURES etc.)
    CLASSES_KEY,
    FILES,
    IMAGE_SHAPE,
    N_FEATURES,
    SYNTHETIC_ATTR,
)
from deepnet.errors import DataError, InputError
from deepnet.hdf5 import MAX_EXAMPLES, Split, _first_line, read_split  # noqa: F401
from deepnet.pictures import load_picture  # noqa: F401  (moved; kept importable from here)
from deepnet.synthetic import ensure_synthetic

ENV_VAR = "DEEPNET_DATA"
_HINT = f"a data folder must hold {FILES['train']} and {FILES['test']}; check the path or {ENV_VAR}"


@dataclass(frozen=True)
class Dataset:
    """The cat data, preprocessed: X is (12288, m) float64 in [0, 1], Y is (1, m) of 0/1."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, str]
    source: str  # a one-line description: which data, from where
    synthetic: bool
    folder: Path | None = None
    # The pictures (m, 64, 64, 3) as stored, in 0..255 (floats in [0, 1] are brought back to
    # 0..255 uint8): for galleries, never for training.
    train_images: np.ndarray | None = field(default=None, repr=False)
    test_images: np.ndarray | None = field(default=None, repr=False)
    pixels: str = "0..255"  # the stored pixel convention (see pixel_scale)


def pixel_scale(images: np.ndarray) -> tuple[float, str]:
    """What stored pixel values are divided by to lie in [0, 1], and the convention's name.

    - Integer pixels (uint8, as in the course, or any integer type) must lie in 0..255:
      divided by 255 (``"0..255"``).
    - Float pixels must be finite and at least 0. If none is above 1.0 they are taken as
      already scaled to [0, 1] and used as they are (``"[0, 1]"``): a 0..255 set that dark
      would be black pictures. If the largest is in (1, 255] they are 0..255 values, divided
      by 255 (``"0..255"``).
    - Anything else (negative, above 255, NaN or infinity) matches no convention and is
      refused with :class:`InputError`, never guessed.
    """
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return 255.0, "0..255"  # every value is in range: no pass over the data
    if images.dtype.kind not in "buif":
        raise InputError(f"pixels must be numbers, got dtype {images.dtype}")
    if images.size == 0:
        return 255.0, "0..255"
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        bad = int(np.size(images) - np.count_nonzero(np.isfinite(images)))
        raise InputError(f"holds {bad} non-finite values (NaN or infinity)")
    low, high = images.min(), images.max()
    if low < 0 or high > 255:
        raise InputError(
            f"holds pixel values from {low} to {high}; expected 0..255 (or floats in [0, 1])"
        )
    if images.dtype.kind == "f" and high <= 1.0:
        return 1.0, "[0, 1]"
    return 255.0, "0..255"


def preprocess(images: np.ndarray) -> np.ndarray:
    """Pictures (m, 64, 64, 3) -> X (12288, m) float64 in [0, 1]: C-order columns, scaled.

    0..255 values are divided by 255 (the course's preprocessing, bit for bit); floats
    already in [0, 1] are used as they are; other values are refused (:func:`pixel_scale`).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise InputError(
            f"pictures must have shape (m, 64, 64, 3) (m RGB pictures of 64x64 pixels), "
            f"got {images.shape}"
        )
    scale, _ = pixel_scale(images)
    if scale == 1.0:
        return images.reshape(images.shape[0], -1).T.astype(np.float64)
    return images.reshape(images.shape[0], -1).T / 255.0


def data_dir(folder: str | os.PathLike | None = None) -> Path | None:
    """The data folder: ``folder`` if given, else ``$DEEPNET_DATA``, else None."""
    if folder is not None and str(folder).strip():
        return Path(folder).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env).expanduser() if env else None


def _check_folder(root: Path) -> None:
    """A DataError naming the real reason ``root`` cannot be the data folder."""
    holds = f"it should hold {FILES['train']} and {FILES['test']}; check the path or {ENV_VAR}"
    try:
        info = os.stat(root)
    except FileNotFoundError:
        raise DataError(f"data folder {root} does not exist ({holds})") from None
    except NotADirectoryError:
        raise DataError(f"data folder {root} does not exist (part of the path is a file)") from None
    except PermissionError:
        raise DataError(f"data folder {root}: permission denied (cannot look inside)") from None
    except OSError as exc:
        raise DataError(f"data folder {root}: cannot be looked up ({exc.strerror})") from None
    if not stat.S_ISDIR(info.st_mode):
        raise DataError(f"data folder {root} is a file, not a folder ({holds})")


def load_dataset(folder: str | os.PathLike | None = None) -> Dataset:
    """Load and check both files from ``folder`` (default ``$DEEPNET_DATA``)."""
    root = data_dir(folder)
    if root is None:
        raise DataError(
            f"no data folder given: pass one, or set {ENV_VAR} to the folder holding "
            f"{FILES['train']} and {FILES['test']}"
        )
    _check_folder(root)
    train = read_split(root / FILES["train"], "train", hint=_HINT)
    test = read_split(root / FILES["test"], "test", hint=_HINT)
    if train.classes != test.classes:
        raise DataError(
            f"{root}: the two files name different classes "
            f"({list(train.classes)} vs {list(test.classes)})"
        )
    if train.synthetic != test.synthetic:
        raise DataError(f"{root}: one file is deepnet's synthetic set and the other is not")
    train_x, train_pixels = _features(train)
    test_x, test_pixels = _features(test)
    kind = "synthetic cat/non-cat pictures (deepnet's built-in stand-in, not photos)"
    if not train.synthetic:
        kind = "course cat/non-cat data"
    pixels = train_pixels if train_pixels == test_pixels else f"{train_pixels} / {test_pixels}"
    note = "" if pixels == "0..255" else f" (pixels stored as {pixels}, scaled to [0, 1])"
    return Dataset(
        train_x=train_x,
        train_y=train.labels.astype(np.float64).reshape(1, train.m),
        test_x=test_x,
        test_y=test.labels.astype(np.float64).reshape(1, test.m),
        classes=train.classes,
        source=f"{kind}: {train.m} train / {test.m} test pictures from {root}{note}",
        synthetic=train.synthetic,
        folder=root,
        train_images=_viewable(train.images, train_pixels),
        test_images=_viewable(test.images, test_pixels),
        pixels=pixels,
    )


def _features(split: Split) -> tuple[np.ndarray, str]:
    """X of one split and its pixel convention; a DataError naming the file if none fits."""
    try:
        _, convention = pixel_scale(split.images)
        return preprocess(split.images), convention
    except InputError as exc:
        raise DataError(f"{split.path}: {split.x_key} {exc}") from None


def _viewable(images: np.ndarray, convention: str) -> np.ndarray:
    """The pictures in 0..255, as a gallery draws them."""
    if convention == "0..255":
        return images
    return np.rint(images.astype(np.float64) * 255.0).astype(np.uint8)


def real_data_found(folder: str | os.PathLike | None = None) -> bool:
    """True when ``folder`` (default ``$DEEPNET_DATA``) holds both data files."""
    root = data_dir(folder)
    return root is not None and all((root / name).is_file() for name in FILES.values())


def load_synthetic(folder: str | os.PathLike | None = None) -> Dataset:
    """The synthetic set (generated into ``folder``, default the cache, on first use)."""
    root = ensure_synthetic(folder)
    dataset = load_dataset(root)
    if not dataset.synthetic:
        raise DataError(f"{root} holds files not marked as deepnet's synthetic set")
    return dataset


def load_cat_data(folder: str | os.PathLike | None = None, *, synthetic: bool = False) -> Dataset:
    """The data the ``deepnet`` command uses: the course data if given, else the synthetic set.

    ``synthetic=True`` forces the synthetic set. Otherwise ``folder``, then ``$DEEPNET_DATA``,
    must hold the course files when given (a wrong path is an error, not a silent switch);
    with neither, the synthetic set is generated once into the cache and used.
    """
    if synthetic:
        if folder is not None:
            raise InputError("give either a data folder or the synthetic set, not both")
        return load_synthetic()
    if data_dir(folder) is None:
        return load_synthetic()
    return load_dataset(folder)
