"""Rows of a course-layout HDF5 file by index, for training that streams from disk.

:func:`open_course_file` checks a file with :mod:`deepnet.hdf5`'s checks (the same ones, in
the same order, as :func:`deepnet.hdf5.read_split`, so a hostile file gets the same message)
plus what reading by rows needs: uint8 pictures, one label per row, chunks of at most
``MAX_CHUNK_BYTES``. There is no limit on the number of examples (that is the point of
streaming), but every example must be stored: a small file declaring millions of pictures is
refused. :class:`RowReader` reads any set of rows; a contiguous uncompressed dataset is read
with ``os.preadv`` straight into the destination, one call per run of consecutive rows.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from deepnet.constants import CLASS_NAMES
from deepnet.errors import DataError, InputError
from deepnet.hdf5 import (
    _H5_ERRORS,
    MAX_CHUNK_BYTES,
    _check_layout,
    _Checked,
    _open,
    _short,
    _unreadable,
    check_labels,
)


@dataclass(frozen=True)
class CourseFile:
    """A checked data file in the course's layout: where the images and labels are, sizes."""

    path: Path
    x_key: str
    y_key: str
    m: int
    n_x: int
    classes: tuple[str, str] = CLASS_NAMES
    synthetic: bool = False
    image_shape: tuple[int, ...] | None = None  # the picture shape required when opened

    @property
    def nbytes(self) -> int:
        """Size of the images in the file (uint8), what in-memory loading would start from."""
        return self.m * self.n_x


def _find_key(f: h5py.File, suffix: str, path: Path) -> str:
    found = sorted(k for k in f if isinstance(k, str) and k.endswith(suffix))
    if len(found) != 1:
        raise DataError(
            f"{path}: expected exactly one dataset named '*{suffix}' (the course's layout: "
            f"train_set_x, train_set_y, list_classes), found {_short(found) if found else 'none'} "
            f"among {_short(sorted(f, key=str))}; pass x_key= / y_key= to name them"
        )
    return found[0]


def _check_rows(
    f: h5py.File, path: Path, x_key: str, y_key: str, image_shape: tuple[int, ...] | None
) -> _Checked:
    """The shared checks, then what reading by rows adds."""
    checked = _check_layout(f, path, x_key, y_key, image_shape, classes_required=False)
    x, y = checked.x, checked.y
    if x.dtype != np.uint8:
        raise DataError(
            f"{path}: {x_key} must be uint8 images of shape (m, ...), like the course's "
            f"(m, 64, 64, 3); got {x.dtype} {x.shape}"
        )
    if y.ndim == 2 and y.shape[0] != checked.m:
        raise DataError(
            f"{path}: {y_key} has shape {y.shape}; streaming reads one label per row, "
            f"store them as ({checked.m},)"
        )
    for ds, key in ((x, x_key), (y, y_key)):
        chunk = math.prod(ds.chunks) * ds.dtype.itemsize if ds.chunks else 0
        if chunk > MAX_CHUNK_BYTES:
            raise DataError(
                f"{path}: {key} is stored in chunks of {chunk} bytes; reading one row would "
                f"inflate a whole chunk, so streaming takes chunks up to {MAX_CHUNK_BYTES} bytes"
            )
    return checked


def open_course_file(
    path: str | os.PathLike,
    x_key: str | None = None,
    y_key: str | None = None,
    *,
    image_shape: tuple[int, ...] | None = None,
) -> CourseFile:
    """Check that ``path`` holds uint8 pictures (m, ...) and m labels; describe it.

    The keys default to the one dataset ending in ``_set_x`` and the one ending in ``_set_y``;
    ``list_classes`` is checked when present (else the names are ``("non-cat", "cat")``).
    ``image_shape=IMAGE_SHAPE`` requires the course's (m, 64, 64, 3), as ``deepnet.data`` does;
    None accepts any picture shape. Raises :class:`DataError` saying what is missing or wrong.
    """
    path = Path(path)
    f, fd = _open(path)
    os.close(fd)
    try:
        with f:
            x_key = x_key or _find_key(f, "_set_x", path)
            y_key = y_key or _find_key(f, "_set_y", path)
            checked = _check_rows(f, path, x_key, y_key, image_shape)
    except DataError:
        raise
    except _H5_ERRORS as exc:
        raise _unreadable(path, exc) from None
    n_x = math.prod(checked.x.shape[1:])
    shape = tuple(image_shape) if image_shape is not None else None
    return CourseFile(path, x_key, y_key, checked.m, n_x, checked.classes, checked.synthetic, shape)


def read_range(source: CourseFile, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Examples [start, stop) of ``source``: uint8 rows (b, n_x) and labels (b,), checked.

    What one MPI rank loads as its shard (``rows.T / 255.0`` is its X, bit for bit the
    in-memory loading's); the file is checked again as it is opened.
    """
    if not 0 <= start <= stop <= source.m:
        raise InputError(f"rows {start}..{stop} are not within 0..{source.m}")
    rows = np.empty((stop - start, source.n_x), np.uint8)
    with RowReader(source, max(stop - start, 1)) as reader:
        labels = reader.read(np.arange(start, stop), rows)
    return rows, labels


class _Rows:
    """Reads whole rows (entries along axis 0) of one dataset, in increasing row order.

    A contiguous dataset is read with ``os.preadv`` straight into the destination, one call
    per run of consecutive rows, which is several times faster than h5py's point selections;
    any other layout (chunked, compressed) goes through h5py's fancy indexing.
    """

    def __init__(self, dataset: h5py.Dataset, fd: int, path: Path) -> None:
        self.dataset, self.path = dataset, path
        self.dtype = dataset.dtype
        self.row_size = math.prod(dataset.shape[1:])
        self.row_bytes = self.row_size * self.dtype.itemsize
        self._fd = fd
        self._offset = self._raw_offset(dataset)
        if self._offset is not None:  # trust the address only if it reads back row 0
            probe = np.empty((1, self.row_size), self.dtype)
            self._pread(np.array([0]), probe)
            if not np.array_equal(probe[0], np.asarray(dataset[0]).reshape(-1)):
                self._offset = None

    @staticmethod
    def _raw_offset(dataset: h5py.Dataset) -> int | None:
        plist = dataset.id.get_create_plist()
        if not hasattr(os, "preadv"):  # Windows (and old macOS): h5py reads everything
            return None
        if plist.get_layout() != h5py.h5d.CONTIGUOUS or plist.get_external_count():
            return None
        return dataset.id.get_offset()  # None while the storage is not allocated

    def _pread(self, rows: np.ndarray, out: np.ndarray) -> None:
        # Runs of consecutive rows: one system call each.
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate(([0], breaks))
        stops = np.concatenate((breaks, [len(rows)]))
        flat = out.reshape(len(rows), -1).view(np.uint8)
        for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
            run = flat[a:b].reshape(-1)
            at, start = 0, self._offset + int(rows[a]) * self.row_bytes
            while at < run.size:  # a read may return less than asked; 0 means end of file
                got = os.preadv(self._fd, [run[at:]], start + at)
                if got == 0:
                    raise DataError(
                        f"{self.path}: {self.dataset.name} is truncated (it ends inside row "
                        f"{int(rows[a]) + at // self.row_bytes}); regenerate or re-download "
                        "the file"
                    )
                at += got

    def read_sorted(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Fill ``out[k]`` with row ``rows[k]``; ``rows`` increasing and unique."""
        if self._offset is not None:
            self._pread(rows, out)
        else:  # h5py wants increasing, unique indices: which is what we have
            out[...] = self.dataset[rows].reshape(out.shape)


class RowReader:
    """Examples of a course file, in any order: image rows (b, n_x) uint8 and (b,) labels.

    Opening checks the file again (it may have changed since :func:`open_course_file`) and
    keeps it open until :meth:`close` (or the end of a ``with`` block). ``max_batch`` is the
    most examples one :meth:`read` is asked for.
    """

    def __init__(self, source: CourseFile, max_batch: int) -> None:
        self.source = source
        path = source.path
        self._file, self._fd = _open(path)
        try:
            checked = _check_rows(self._file, path, source.x_key, source.y_key, source.image_shape)
            n_x = math.prod(checked.x.shape[1:])
            if (checked.m, n_x) != (source.m, source.n_x):
                raise DataError(
                    f"{path}: the file changed since it was checked ({checked.m} examples of "
                    f"{n_x} values, was {source.m} of {source.n_x}); open it again"
                )
            self._x = _Rows(checked.x, self._fd, path)
            self._y = _Rows(checked.y, self._fd, path)
        except BaseException as exc:
            self.close()
            if isinstance(exc, _H5_ERRORS) and not isinstance(exc, DataError):
                raise _unreadable(path, exc) from None
            raise
        self._sorted = np.empty((max_batch, source.n_x), np.uint8)  # reused: rows in file order

    def read(self, idx: np.ndarray, rows_out: np.ndarray) -> np.ndarray:
        """Write the images of ``idx`` into ``rows_out`` (b, n_x), in idx's order; return labels."""
        order = np.argsort(idx, kind="stable")
        rows = idx[order]
        if len(rows) and (rows[0] < 0 or rows[-1] >= self.source.m):
            raise InputError(f"example index out of range 0..{self.source.m - 1}")
        b = len(idx)
        sorted_x = self._sorted[:b]
        sorted_y = np.empty(b, self._y.dtype)
        try:
            self._x.read_sorted(rows, sorted_x)
            self._y.read_sorted(rows, sorted_y)
        except DataError:
            raise
        except _H5_ERRORS as exc:
            raise _unreadable(self.source.path, exc) from None
        inv = np.empty_like(order)  # example idx[j] is sorted row inv[j]
        inv[order] = np.arange(b)
        np.take(sorted_x, inv, axis=0, out=rows_out, mode="clip")  # whole 12 KB rows: cheap
        y = sorted_y[inv]
        check_labels(y, self.source.path, self.source.y_key, self.source.classes)
        return y

    def close(self) -> None:
        """Release the file handles (again: nothing)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._file.close()

    def __enter__(self) -> RowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
