"""Reading a model file's ZIP members without trusting their headers.

A model file is a ZIP of ``.npy`` arrays plus JSON (:mod:`deepnet.model_io`). Its headers
declare sizes that a damaged or forged file can lie about, so every member is checked before
it is read (size against the file, expansion against :data:`deepnet.hdf5.MAX_EXPANSION`),
then read in bounded steps straight into its final buffer; ``.npy`` headers are parsed, never
evaluated. Only regular files are opened (a FIFO or device would block).
"""

from __future__ import annotations

import io
import lzma
import math
import os
import reprlib
import stat
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from deepnet.errors import ModelFileError
from deepnet.fileio import NotRegularFileError, open_regular
from deepnet.hdf5 import MAX_EXPANSION

_NPY_HEADER_SLACK = 4096  # a .npy member is its data plus a small header
# Trained weights deflate to about their own size; a member that would expand more than
# MAX_EXPANSION times (deepnet.data's rule for HDF5), plus this, is a decompression bomb.
EXPANSION_SLACK = 1 << 20
_CHUNK = 16 << 20  # parameters are read in steps of this many bytes


# What zipfile and the decompressors raise on damaged or foreign archives (found by fuzzing,
# tests/test_fuzz_files.py): unsupported versions or methods and encrypted members
# (NotImplementedError, RuntimeError), broken deflate or xz streams, bad headers.
_DAMAGED = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    zlib.error,
    lzma.LZMAError,
)

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 80
_repr.maxlist = _repr.maxtuple = _repr.maxdict = 6
_repr.maxlevel = 3


def _short(value: object) -> str:
    """A repr cut to a line: messages stay readable whatever the file holds."""
    text = _repr.repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _short_text(text: str) -> str:
    """A (library's) message cut to a line."""
    text = " ".join(text.split())
    return text if len(text) <= 160 else text[:157] + "..."


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> bytes:
    """A member's bytes, read so that forged sizes in the ZIP headers cannot cost memory.

    ``ZipFile.read`` sizes its buffers from the headers (a compressed size of 4 GB in a
    100 kB file) and inflates a member in one call (a deflate bomb); reading exactly the
    declared size, in bounded steps, cannot. The CRC-32 is checked when the end is reached.
    """
    _check_sizes(info, path)
    with archive.open(info) as member:
        data = member.read(info.file_size)
        if len(data) != info.file_size or member.read(1):
            raise ModelFileError(
                f"{path}: {info.filename} does not hold the {info.file_size} bytes its header "
                "declares; the file is damaged"
            )
    return data


def _check_sizes(info: zipfile.ZipInfo, path: Path) -> None:
    """Refuse a member whose sizes are forged or a decompression bomb, before reading it."""
    if info.compress_size > os.path.getsize(path):
        raise ModelFileError(
            f"{path}: {info.filename} claims {info.compress_size} bytes, more than the whole "
            "file; it is damaged or truncated"
        )
    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else MAX_EXPANSION
    if info.file_size > ratio * info.compress_size + EXPANSION_SLACK:
        raise ModelFileError(
            f"{path}: {info.filename} would expand from {info.compress_size} compressed bytes "
            f"to {info.file_size}, more than {ratio} times; refused as a decompression bomb"
        )


def _open_regular(path: Path) -> BinaryIO:
    """Open a model file, which must be a regular file: a FIFO or device would block or never
    end (:func:`deepnet.fileio.open_regular`)."""
    try:
        return open_regular(path)
    except NotRegularFileError as exc:
        if stat.S_ISDIR(exc.mode):
            raise ModelFileError(f"{path}: a folder, not a model file") from None
        raise ModelFileError(
            f"{path}: not a regular file (a FIFO, socket or device); not read"
        ) from None
    except FileNotFoundError:
        raise ModelFileError(f"model file not found: {path}") from None
    except PermissionError:
        raise ModelFileError(f"{path}: permission denied (cannot read the model file)") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot open the model file ({exc.strerror})") from None


def _read_array(
    archive: zipfile.ZipFile, name: str, shape: tuple[int, int], dtype: str, path: Path
) -> np.ndarray:
    member = f"{name}.npy"
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise ModelFileError(f"{path}: parameter {name} is missing") from None
    data_bytes = math.prod(shape) * np.dtype(dtype).itemsize
    # Sizes are checked before reading, so a forged header cannot make us allocate gigabytes.
    if info.file_size > data_bytes + _NPY_HEADER_SLACK:
        raise ModelFileError(
            f"{path}: parameter {name} takes {info.file_size} bytes, more than its shape "
            f"{shape} needs ({data_bytes})"
        )
    _check_sizes(info, path)
    with archive.open(info) as member:
        prefix = member.read(min(info.file_size, _NPY_HEADER_SLACK))
        buffer = io.BytesIO(prefix)
        try:
            stored_shape, fortran, stored_dtype = _npy_header(buffer, path, name)
        except (ValueError, SyntaxError, tokenize.TokenError, RecursionError, TypeError) as exc:
            # NumPy parses the header (a Python literal, never evaluated) and reports a damaged
            # one with any of these; the fuzz tests found the tokenizer's own error among them.
            raise ModelFileError(
                f"{path}: parameter {name} has a damaged .npy header ({_short_text(str(exc))})"
            ) from None
        if stored_shape != shape or stored_dtype != np.dtype(dtype):
            raise ModelFileError(
                f"{path}: {name} is stored as {stored_dtype} {_short(stored_shape)}, but "
                f"layer_dims and dtype need {dtype} {shape}"
            )
        held = info.file_size - buffer.tell()
        if held != data_bytes:
            raise ModelFileError(
                f"{path}: {name} holds {held} bytes of data, expected {data_bytes}"
            )
        # Read straight into the array, in bounded steps: memory is the parameter itself.
        flat = np.empty(math.prod(shape), dtype=stored_dtype)
        raw = memoryview(flat).cast("B")
        head = prefix[buffer.tell() :]
        raw[: len(head)] = head
        done = len(head)
        while done < data_bytes:
            got = member.readinto(raw[done : done + _CHUNK])
            if not got:
                break
            done += got
        if done != data_bytes or member.read(1):
            raise ModelFileError(
                f"{path}: {info.filename} does not hold the {info.file_size} bytes its header "
                "declares; the file is damaged"
            )
    array = flat.reshape(shape, order="F" if fortran else "C")
    return np.ascontiguousarray(array)


def _npy_header(buffer: io.BytesIO, path: Path, name: str) -> tuple[Any, bool, np.dtype]:
    version = np.lib.format.read_magic(buffer)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(buffer)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(buffer)
    raise ModelFileError(f"{path}: parameter {name} uses .npy version {version}")
