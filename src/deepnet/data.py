"""The course's cat / non-cat data: load, check and preprocess the two HDF5 files.

Layout (``train_catvnoncat.h5`` and ``test_catvnoncat.h5``): ``{split}_set_x`` holds m
pictures of 64x64 RGB pixels, uint8, shape (m, 64, 64, 3); ``{split}_set_y`` holds m labels
in {0, 1}; ``list_classes`` holds the two class names, ``[b'non-cat', b'cat']``.
Preprocessing, as in the course: each picture flattened in C order to a 12288-long column
(X is 12288 x m), then divided by 255; labels become a (1, m) row.

Every problem with a file is reported as :class:`DataError` naming the file and what is
wrong with it; shapes, dtypes and storage are checked from the file's declarations before any
array is read, so a file declaring an absurd size is refused without allocating it: a
dataset must store the bytes it declares (or a plausible compressed form of them), its chunks
may not be larger than its data, and links, external storage and virtual datasets that would
make HDF5 open other files are refused. Found by fuzzing: tests/test_fuzz_files.py.
"""

from __future__ import annotations

import math
import os
import reprlib
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from deepnet.errors import DataError, InputError
from deepnet.pictures import load_picture  # noqa: F401  (moved; kept importable from here)

ENV_VAR = "DEEPNET_DATA"
FILES = {"train": "train_catvnoncat.h5", "test": "test_catvnoncat.h5"}
IMAGE_SHAPE = (64, 64, 3)
N_FEATURES = 64 * 64 * 3  # 12288
CLASSES_KEY = "list_classes"
SYNTHETIC_ATTR = "deepnet_synthetic"  # set to True in the files deepnet.synthetic writes
MAX_EXAMPLES = 20_000  # per file; the course's set has 209 + 50 (20 000 pictures = 2 GB as X)
MAX_NAME_BYTES = 256  # a class name is a word; a fixed-size string type of gigabytes is not
# Pictures gzip to about their own size (ratio ~1.0 on the course's and the synthetic set);
# a dataset that would expand more than this from the bytes the file holds is a bomb.
MAX_EXPANSION = 64
_SMALL = 1 << 20  # sizes below a mebibyte are never a memory problem

_FIX = f"the course's files hold uint8 pictures (m, 64, 64, 3), labels (m,) and {CLASSES_KEY}"


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
    # The pictures as stored, (m, 64, 64, 3): for galleries, never for training.
    train_images: np.ndarray | None = field(default=None, repr=False)
    test_images: np.ndarray | None = field(default=None, repr=False)


def preprocess(images: np.ndarray) -> np.ndarray:
    """Pictures (m, 64, 64, 3) with values 0..255 -> X (12288, m) float64: C-order columns / 255."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise InputError(
            f"pictures must have shape (m, 64, 64, 3) (m RGB pictures of 64x64 pixels), "
            f"got {images.shape}"
        )
    return images.reshape(images.shape[0], -1).T / 255.0


def data_dir(folder: str | os.PathLike | None = None) -> Path | None:
    """The data folder: ``folder`` if given, else ``$DEEPNET_DATA``, else None."""
    if folder is not None and str(folder).strip():
        return Path(folder).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env).expanduser() if env else None


def load_dataset(folder: str | os.PathLike | None = None) -> Dataset:
    """Load and check both files from ``folder`` (default ``$DEEPNET_DATA``)."""
    root = data_dir(folder)
    if root is None:
        raise DataError(
            f"no data folder given: pass one, or set {ENV_VAR} to the folder holding "
            f"{FILES['train']} and {FILES['test']}"
        )
    if not root.is_dir():
        raise DataError(
            f"data folder {root} does not exist (it should hold {FILES['train']} and "
            f"{FILES['test']}; check the path or {ENV_VAR})"
        )
    train = _read_split(root / FILES["train"], "train")
    test = _read_split(root / FILES["test"], "test")
    if train.classes != test.classes:
        raise DataError(
            f"{root}: the two files name different classes "
            f"({list(train.classes)} vs {list(test.classes)})"
        )
    if train.synthetic != test.synthetic:
        raise DataError(f"{root}: one file is deepnet's synthetic set and the other is not")
    kind = "synthetic cat/non-cat pictures (deepnet's built-in stand-in, not photos)"
    if not train.synthetic:
        kind = "course cat/non-cat data"
    return Dataset(
        train_x=preprocess(train.images),
        train_y=train.labels,
        test_x=preprocess(test.images),
        test_y=test.labels,
        classes=train.classes,
        source=f"{kind}: {train.m} train / {test.m} test pictures from {root}",
        synthetic=train.synthetic,
        folder=root,
        train_images=train.images,
        test_images=test.images,
    )


def real_data_found(folder: str | os.PathLike | None = None) -> bool:
    """True when ``folder`` (default ``$DEEPNET_DATA``) holds both data files."""
    root = data_dir(folder)
    return root is not None and all((root / name).is_file() for name in FILES.values())


def load_cat_data(folder: str | os.PathLike | None = None, *, synthetic: bool = False) -> Dataset:
    """The data the ``deepnet`` command uses: the course data if given, else the synthetic set.

    ``synthetic=True`` forces the synthetic set. Otherwise ``folder``, then ``$DEEPNET_DATA``,
    must hold the course files when given (a wrong path is an error, not a silent switch);
    with neither, the synthetic set is generated once into the cache and used.
    """
    if synthetic:
        if folder is not None:
            raise InputError("give either a data folder or the synthetic set, not both")
        from deepnet.synthetic import load_synthetic  # noqa: PLC0415  (imports this module)

        return load_synthetic()
    if data_dir(folder) is None:
        from deepnet.synthetic import load_synthetic  # noqa: PLC0415

        return load_synthetic()
    return load_dataset(folder)


@dataclass(frozen=True)
class _Split:
    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, str]
    synthetic: bool

    @property
    def m(self) -> int:
        return self.images.shape[0]


def _read_split(path: Path, split: str) -> _Split:
    if not path.is_file():
        raise DataError(
            f"{path}: file not found (a data folder must hold {FILES['train']} and "
            f"{FILES['test']}; check the path or {ENV_VAR})"
        )
    try:
        with h5py.File(path, "r") as f:
            return _read_open_file(f, path, split)
    except DataError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, OverflowError) as exc:
        # h5py reports damaged or foreign files with OSError (and a few others); say it plainly.
        raise DataError(
            f"{path}: cannot be read as the course's HDF5 file ({_first_line(exc)}); "
            "is it damaged or a different file? Download it again or point to another folder"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return _short(text[0]) if text else type(exc).__name__


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 80
_repr.maxlist = _repr.maxtuple = 6


def _short(value: object) -> str:
    """A repr (or a string) cut to a line: messages stay readable whatever the file holds."""
    text = _repr.repr(value)[1:-1] if isinstance(value, str) else _repr.repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _dataset(f: h5py.File, key: str, path: Path) -> h5py.Dataset:
    link = f.get(key, getlink=True)
    if link is None:
        names = sorted(f.keys())
        found = ", ".join(_short(n) for n in names[:8]) or "nothing"
        more = f" and {len(names) - 8} more" if len(names) > 8 else ""
        raise DataError(f"{path}: missing dataset {key!r} (found: {found}{more}); {_FIX}")
    if isinstance(link, h5py.ExternalLink):
        # Following it would open another file (any path the file names); the course's do not.
        raise DataError(
            f"{path}: {key!r} is a link to {_short(link.filename)}, another file, which deepnet "
            f"does not follow; {_FIX}"
        )
    obj = f.get(key)
    if obj is None and isinstance(link, h5py.SoftLink):
        raise DataError(f"{path}: {key!r} is a link to nothing ({_short(link.path)}); {_FIX}")
    if obj is None:
        raise DataError(f"{path}: {key!r} cannot be opened; the file is damaged")
    if not isinstance(obj, h5py.Dataset):
        raise DataError(f"{path}: {key!r} is a group, not a dataset; {_FIX}")
    if obj.shape is None:
        raise DataError(f"{path}: {key!r} is an empty dataset (no shape, no data); {_FIX}")
    return obj


def _check_storage(ds: h5py.Dataset, key: str, path: Path) -> None:
    """Refuse, before reading, a dataset whose reading would cost far more than the file."""
    if ds.is_virtual or ds.external:
        raise DataError(
            f"{path}: {key} keeps its data in other files (external storage or a virtual "
            "dataset), which deepnet does not read; the course's files hold their own data"
        )
    declared = ds.size * ds.dtype.itemsize
    stored = ds.id.get_storage_size()
    filtered = ds.id.get_create_plist().get_nfilters() > 0
    if ds.chunks is not None:
        chunk = math.prod(ds.chunks) * ds.dtype.itemsize
        if chunk > max(declared, _SMALL):  # HDF5 reads (and inflates) whole chunks
            raise DataError(
                f"{path}: {key} is stored in chunks of {chunk} bytes, larger than its "
                f"{declared} bytes of data; is this the course's file?"
            )
    if ds.dtype.kind == "O":
        return  # variable-length strings live in a heap the storage size does not count
    if not filtered and stored < declared:
        raise DataError(
            f"{path}: {key} declares {ds.shape} {ds.dtype} ({declared} bytes) but the file "
            f"holds only {stored} bytes of it; the file is truncated or not the course's"
        )
    if filtered and declared > MAX_EXPANSION * stored + _SMALL:
        raise DataError(
            f"{path}: {key} would expand from {stored} compressed bytes to {declared}, more "
            f"than {MAX_EXPANSION} times; refused as a decompression bomb"
        )


def _flag(f: h5py.File, name: str, path: Path) -> bool:
    """A true/false file attribute, checked before it is read (its declared size could be huge)."""
    if name not in f.attrs:
        return False
    attribute = f.attrs.get_id(name)
    if attribute.shape not in ((), (1,)) or attribute.dtype.kind not in "biu":
        raise DataError(
            f"{path}: attribute {name} must be a single true/false value, got "
            f"{attribute.dtype} of shape {attribute.shape}"
        )
    return bool(np.asarray(f.attrs[name]).reshape(-1)[0])


def _read_open_file(f: h5py.File, path: Path, split: str) -> _Split:
    x_key, y_key = f"{split}_set_x", f"{split}_set_y"
    x, y, c = _dataset(f, x_key, path), _dataset(f, y_key, path), _dataset(f, CLASSES_KEY, path)

    # Everything about sizes and types is checked from the declarations, before reading.
    if len(x.shape) != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE:
        raise DataError(
            f"{path}: {x_key} has shape {x.shape}; expected (m, 64, 64, 3), "
            "m RGB pictures of 64x64 pixels"
        )
    m = x.shape[0]
    if m == 0:
        raise DataError(f"{path}: {x_key} holds no examples (m = 0); training needs pictures")
    if m > MAX_EXAMPLES:
        raise DataError(
            f"{path}: {x_key} declares {m} pictures, more than deepnet loads "
            f"({MAX_EXAMPLES}); is this the course's file?"
        )
    if x.dtype.kind not in "uif" or x.dtype.itemsize > 8:
        raise DataError(f"{path}: {x_key} has dtype {x.dtype}; expected uint8 pixel values 0..255")
    if tuple(y.shape) not in ((m,), (1, m), (m, 1)):
        raise DataError(
            f"{path}: {y_key} has shape {y.shape}; expected ({m},), one label per picture "
            f"of {x_key}"
        )
    if y.dtype.kind not in "uifb" or y.dtype.itemsize > 8:
        raise DataError(f"{path}: {y_key} has dtype {y.dtype}; expected integer labels 0 or 1")
    if tuple(c.shape) != (2,) or not _is_string_dtype(c.dtype):
        raise DataError(
            f"{path}: {CLASSES_KEY} has shape {c.shape} and dtype {c.dtype}; expected two "
            "class names such as [b'non-cat', b'cat']"
        )
    if c.dtype.kind in "SU" and c.dtype.itemsize > MAX_NAME_BYTES:
        raise DataError(
            f"{path}: {CLASSES_KEY} holds names of {c.dtype.itemsize} bytes each; class names "
            f"are words (at most {MAX_NAME_BYTES} bytes)"
        )
    for dataset, key in ((x, x_key), (y, y_key), (c, CLASSES_KEY)):
        _check_storage(dataset, key, path)

    images = np.asarray(x[()])
    labels = np.asarray(y[()]).reshape(m)
    classes = _class_names(c[()], path)
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        bad = int(np.size(images) - np.count_nonzero(np.isfinite(images)))
        raise DataError(f"{path}: {x_key} holds {bad} non-finite values (NaN or infinity)")
    low, high = images.min(), images.max()
    if low < 0 or high > 255:
        raise DataError(f"{path}: {x_key} holds pixel values from {low} to {high}; expected 0..255")
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise DataError(f"{path}: {y_key} holds non-finite labels (NaN or infinity)")
    bad_labels = ~np.isin(labels, (0, 1))
    if bad_labels.any():
        shown = ", ".join(str(v) for v in np.unique(labels[bad_labels])[:5])
        raise DataError(
            f"{path}: {y_key} holds {int(bad_labels.sum())} labels outside {{0, 1}} "
            f"(values {shown}); labels must be 0 ({classes[0]}) or 1 ({classes[1]})"
        )
    synthetic = _flag(f, SYNTHETIC_ATTR, path)
    return _Split(images, labels.astype(np.float64).reshape(1, m), classes, synthetic)


def _is_string_dtype(dtype: np.dtype) -> bool:
    return dtype.kind in "SU" or h5py.check_string_dtype(dtype) is not None


def _class_names(raw: np.ndarray, path: Path) -> tuple[str, str]:
    names = []
    for value in np.asarray(raw).reshape(-1):
        try:
            text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            raise DataError(f"{path}: {CLASSES_KEY} holds a name that is not UTF-8 text") from None
        if len(text) > MAX_NAME_BYTES:
            raise DataError(
                f"{path}: {CLASSES_KEY} holds a name of {len(text)} characters; class names "
                f"are words (at most {MAX_NAME_BYTES})"
            )
        names.append(text.strip())
    if any(not n for n in names) or names[0] == names[1]:
        raise DataError(f"{path}: {CLASSES_KEY} must hold two different names, got {_short(names)}")
    return names[0], names[1]
