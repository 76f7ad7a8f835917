"""The one checked reader of course-layout HDF5 files: every path that reads one goes through it.

- Only regular files are opened: a FIFO, a device, a folder or a socket is refused by name
  before anything could block on it, and each error names the path and its real cause
  (missing, permission denied, not HDF5, damaged).
- Declarations are checked before any data is read: links to other files, external raw
  storage and virtual datasets are refused (they would make HDF5 open other files); a dataset
  must store the bytes it declares (or a compressed form at most ``MAX_EXPANSION`` times
  smaller), and its chunks may not be larger than its data. So a tiny file declaring millions
  of pictures, or a gzip bomb, is refused without reading or allocating anything.
- Two ways to read: :func:`read_split` (a whole split, for :mod:`deepnet.data`) and
  :mod:`deepnet.hdf5_rows` (rows by index, for streaming; ``pread`` on contiguous data).
  Both run the same checks in the same order, so a file either refuses gets the same message.
Found by fuzzing: tests/test_fuzz_files.py.
"""

from __future__ import annotations

import math
import os
import reprlib
import stat
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from deepnet.constants import CLASS_NAMES, CLASSES_KEY, IMAGE_SHAPE, SYNTHETIC_ATTR
from deepnet.errors import DataError

MAX_EXAMPLES = 20_000  # per split read whole: 20 000 pictures are 2 GB as float64 X
MAX_NAME_BYTES = 256  # a class name is a word; a fixed-size string type of gigabytes is not
# Pictures gzip to about their own size (ratio ~1.0 on the course's and the synthetic set);
# a dataset that would expand more than this from the bytes the file holds is a bomb.
MAX_EXPANSION = 64
MAX_CHUNK_BYTES = 64 << 20  # reading one row inflates its whole chunk: bound that chunk
_SMALL = 1 << 20  # sizes below a mebibyte are never a memory problem
# What h5py raises for damaged or foreign files (never for a good one).
_H5_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, OverflowError)

_FIX = f"the course's files hold uint8 pictures (m, 64, 64, 3), labels (m,) and {CLASSES_KEY}"


# --------------------------------------------------------------------------- opening


def _special_kind(mode: int) -> str | None:
    kinds = {
        stat.S_ISDIR: "a folder",
        stat.S_ISFIFO: "a named pipe (FIFO)",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    kind = next((name for test, name in kinds.items() if test(mode)), None)
    return kind or (None if stat.S_ISREG(mode) else "an unusual kind of file")


def check_regular_file(path: str | os.PathLike, hint: str = "check the path") -> Path:
    """``path`` as a Path if it is an existing regular file, else a :class:`DataError` naming
    the cause (not found, a folder, a FIFO, a device, no permission). Opens nothing."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; {hint}") from None
    except NotADirectoryError:
        raise DataError(f"{path}: not found (part of the path is a file, not a folder)") from None
    except PermissionError:
        raise DataError(
            f"{path}: permission denied (a folder on the path cannot be searched)"
        ) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be looked up ({exc.strerror or exc})") from None
    kind = _special_kind(info.st_mode)
    if kind:
        raise DataError(
            f"{path}: is {kind}, not a regular file; deepnet reads data only from regular files"
        )
    return path


def _unreadable(path: Path, exc: BaseException) -> DataError:
    return DataError(
        f"{path}: not a readable HDF5 file ({_first_line(exc)}); is it damaged or a different "
        "file? Download it again or point to another one"
    )


def _open(path: str | os.PathLike, hint: str = "check the path") -> tuple[h5py.File, int]:
    """The HDF5 file at ``path`` (a regular file) and a descriptor of it for ``pread``."""
    path = check_regular_file(path, hint)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)  # O_NONBLOCK: a FIFO swapped in after the check cannot block
    except PermissionError:
        raise DataError(
            f"{path}: permission denied (cannot read it); check its permissions"
        ) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be opened ({exc.strerror or exc})") from None
    try:
        mine = os.fstat(fd)
        if not stat.S_ISREG(mine.st_mode):
            raise DataError(f"{path}: is {_special_kind(mine.st_mode)}, not a regular file")
        try:
            f = h5py.File(path, "r")
        except PermissionError:
            raise DataError(f"{path}: permission denied (cannot read it)") from None
        except _H5_ERRORS as exc:
            raise _unreadable(path, exc) from None
        try:
            theirs = os.fstat(f.id.get_vfd_handle())
        except (OSError, ValueError, TypeError, AttributeError):
            theirs = mine  # another HDF5 driver: nothing to compare
        if (theirs.st_dev, theirs.st_ino) != (mine.st_dev, mine.st_ino):
            f.close()
            raise DataError(f"{path}: the file changed while it was being opened; try again")
        return f, fd
    except BaseException:
        os.close(fd)
        raise


def open_hdf5(path: str | os.PathLike, hint: str = "check the path") -> h5py.File:
    """Open a regular HDF5 file read-only (use as a context manager); :class:`DataError` if
    it is missing, special, unreadable or not HDF5. Reading its datasets is the caller's job:
    prefer :func:`read_split` or :class:`RowReader`, which check what they read."""
    f, fd = _open(path, hint)
    os.close(fd)
    return f


# --------------------------------------------------------------------------- messages


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


# --------------------------------------------------------------------------- declarations


def _dataset(f: h5py.File, key: str, path: Path) -> h5py.Dataset:
    link = f.get(key, getlink=True)
    if link is None:
        names = sorted(f.keys(), key=str)  # a damaged name comes back as bytes
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


def _check_storage(ds: h5py.Dataset, key: str, path: Path, file_size: int) -> None:
    """Refuse, before reading, a dataset whose reading would cost far more than the file."""
    if ds.is_virtual or ds.external:
        raise DataError(
            f"{path}: {key} keeps its data in other files (external storage or a virtual "
            "dataset), which deepnet does not read; the course's files hold their own data"
        )
    declared = ds.size * ds.dtype.itemsize
    stored = ds.id.get_storage_size()
    plist = ds.id.get_create_plist()
    filtered = plist.get_nfilters() > 0
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
    offset = ds.id.get_offset() if plist.get_layout() == h5py.h5d.CONTIGUOUS else None
    if offset is not None and offset + stored > file_size:
        raise DataError(
            f"{path}: {key} ends at byte {offset + stored}, past the end of the file "
            f"({file_size} bytes); the file is truncated or damaged"
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


@dataclass(frozen=True)
class _Checked:
    x: h5py.Dataset
    y: h5py.Dataset
    m: int
    classes: tuple[str, str]
    synthetic: bool


def _check_layout(
    f: h5py.File,
    path: Path,
    x_key: str,
    y_key: str,
    image_shape: tuple[int, ...] | None,
    classes_required: bool,
) -> _Checked:
    """Every check made from declarations alone, in one order for every reader."""
    list(f.keys())  # a file whose names cannot be listed is damaged, whatever is looked up
    x, y = _dataset(f, x_key, path), _dataset(f, y_key, path)
    # (``in`` would hide a damaged link as a missing one: ask for the link itself)
    present = classes_required or f.get(CLASSES_KEY, getlink=True) is not None
    c = _dataset(f, CLASSES_KEY, path) if present else None
    if image_shape is not None and (len(x.shape) != 4 or tuple(x.shape[1:]) != image_shape):
        raise DataError(
            f"{path}: {x_key} has shape {x.shape}; expected (m, 64, 64, 3), "
            "m RGB pictures of 64x64 pixels"
        )
    if len(x.shape) < 2:
        raise DataError(f"{path}: {x_key} has shape {x.shape}; expected pictures (m, ...)")
    m = int(x.shape[0])
    if m == 0:
        raise DataError(f"{path}: {x_key} holds no examples (m = 0); training needs pictures")
    if x.dtype.kind not in "uif" or x.dtype.itemsize > 8:
        raise DataError(f"{path}: {x_key} has dtype {x.dtype}; expected uint8 pixel values 0..255")
    if tuple(y.shape) not in ((m,), (1, m), (m, 1)):
        raise DataError(
            f"{path}: {y_key} has shape {y.shape}; expected ({m},), one label per picture "
            f"of {x_key}"
        )
    if y.dtype.kind not in "uifb" or y.dtype.itemsize > 8:
        raise DataError(f"{path}: {y_key} has dtype {y.dtype}; expected integer labels 0 or 1")
    if c is not None and (tuple(c.shape) != (2,) or not _is_string_dtype(c.dtype)):
        raise DataError(
            f"{path}: {CLASSES_KEY} has shape {c.shape} and dtype {c.dtype}; expected two "
            "class names such as [b'non-cat', b'cat']"
        )
    if c is not None and c.dtype.kind in "SU" and c.dtype.itemsize > MAX_NAME_BYTES:
        raise DataError(
            f"{path}: {CLASSES_KEY} holds names of {c.dtype.itemsize} bytes each; class names "
            f"are words (at most {MAX_NAME_BYTES} bytes)"
        )
    file_size = os.path.getsize(path)
    for dataset, key in ((x, x_key), (y, y_key), (c, CLASSES_KEY)):
        if dataset is not None:
            _check_storage(dataset, key, path, file_size)
    classes = _class_names(c[()], path) if c is not None else CLASS_NAMES
    return _Checked(x, y, m, classes, _flag(f, SYNTHETIC_ATTR, path))


def check_labels(labels: np.ndarray, path: Path, y_key: str, classes: tuple[str, str]) -> None:
    """:class:`DataError` unless every label is 0 or 1 (the same message for every reader)."""
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise DataError(f"{path}: {y_key} holds non-finite labels (NaN or infinity)")
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        shown = ", ".join(str(v) for v in np.unique(labels[bad])[:5])
        raise DataError(
            f"{path}: {y_key} holds {int(bad.sum())} labels outside {{0, 1}} (values {shown}); "
            f"labels must be 0 or 1 (0: {classes[0]}, 1: {classes[1]})"
        )


# --------------------------------------------------------------------------- a whole split


@dataclass(frozen=True)
class Split:
    """One file's split as stored: pictures (m, 64, 64, 3), labels (m,), names, synthetic flag."""

    path: Path
    x_key: str
    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, str]
    synthetic: bool

    @property
    def m(self) -> int:
        """Number of examples."""
        return self.images.shape[0]


def read_split(path: str | os.PathLike, split: str, hint: str = "check the path") -> Split:
    """Read and check ``{split}_set_x``, ``{split}_set_y`` and ``list_classes`` of one file.

    At most :data:`MAX_EXAMPLES` pictures (the whole split is loaded into memory). Pixel
    values are returned as stored (their scale is :mod:`deepnet.data`'s business); labels
    are checked to be 0 or 1. Any problem is a :class:`DataError` naming the file.
    """
    path = Path(path)
    x_key, y_key = f"{split}_set_x", f"{split}_set_y"
    f, fd = _open(path, hint)
    os.close(fd)
    try:
        with f:
            checked = _check_layout(f, path, x_key, y_key, IMAGE_SHAPE, classes_required=True)
            if checked.m > MAX_EXAMPLES:
                raise DataError(
                    f"{path}: {x_key} declares {checked.m} pictures, more than deepnet loads "
                    f"into memory ({MAX_EXAMPLES}); stream larger files instead"
                )
            images = np.asarray(checked.x[()])
            labels = np.asarray(checked.y[()]).reshape(checked.m)
    except DataError:
        raise
    except _H5_ERRORS as exc:
        raise _unreadable(path, exc) from None
    check_labels(labels, path, y_key, checked.classes)
    return Split(path, x_key, images, labels, checked.classes, checked.synthetic)
