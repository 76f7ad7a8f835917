"""Model files: a trained network with what it takes to use it again, and nothing executable.

Format (``format_version`` 1): a ZIP archive, which is also a valid ``.npz``, holding

* ``deepnet.json``: the metadata, UTF-8 JSON (layer dims, activations, dtype, preprocessing,
  class names, training settings and costs, deepnet version, format name and version);
* ``W1.npy``, ``b1.npy``, ..., one NumPy ``.npy`` array per parameter, on the host.

Why this and not pickle or HDF5: loading runs no code (JSON, and ``.npy`` read with
``allow_pickle=False``); ZIP stores a CRC-32 of every member, so a truncated or bit-flipped
file is caught on load instead of giving wrong weights; it needs nothing beyond NumPy
(``numpy.load`` opens it, ``unzip -p model.npz deepnet.json`` shows the metadata); and
parameters are saved with :func:`deepnet.to_numpy`, so a model trained on a GPU loads on a
machine without one. Files are written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import datetime
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepnet.backend import to_numpy
from deepnet.data import IMAGE_SHAPE
from deepnet.errors import DeepnetError, ModelFileError
from deepnet.fileio import atomic_write
from deepnet.initialization import check_layer_dims, place

FORMAT = "deepnet-model"
FORMAT_VERSION = 1
META_NAME = "deepnet.json"
MAX_META_BYTES = 1 << 20  # the metadata is a few kilobytes; refuse anything absurd
_NPY_HEADER_SLACK = 4096  # a .npy member is its data plus a small header
DTYPES = ("float64", "float32")

PREPROCESSING = {
    "input": "RGB picture, resized to 64x64 (bicubic)",
    "image_shape": list(IMAGE_SHAPE),
    "flatten": "C order, one picture per column",
    "scale": "divide by 255",
}


@dataclass
class Model:
    """A trained network: host parameters plus the metadata needed to use it again."""

    parameters: dict[str, np.ndarray]
    layer_dims: list[int]
    classes: tuple[str, str] = ("non-cat", "cat")
    dtype: str = "float64"
    model: str = "L-layer"  # or "two-layer"
    training: dict[str, Any] = field(default_factory=dict)
    costs: list[float] = field(default_factory=list)
    preprocessing: dict[str, Any] = field(default_factory=lambda: dict(PREPROCESSING))
    deepnet_version: str = ""
    created: str = ""

    @property
    def activations(self) -> list[str]:
        """One activation per layer: ReLU for the hidden layers, sigmoid for the output."""
        return ["relu"] * (len(self.layer_dims) - 2) + ["sigmoid"]

    def parameters_on(self, device: str | None = None) -> dict[str, Any]:
        """The parameters copied onto ``device`` (resolved as usual) in the model's dtype."""
        return place(self.parameters, device, self.dtype)


def save_model(model: Model, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` atomically; parameters may live on any device."""
    from deepnet import __version__  # noqa: PLC0415  (deepnet/__init__ may import this module)

    if model.dtype not in DTYPES:
        raise ModelFileError(f"cannot save a model of dtype {model.dtype!r}; use one of {DTYPES}")
    arrays = {
        k: np.ascontiguousarray(to_numpy(v), dtype=model.dtype) for k, v in model.parameters.items()
    }
    _check_parameters(arrays, list(model.layer_dims), model.dtype, "the model to save")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "deepnet_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": model.model,
        "layer_dims": [int(n) for n in model.layer_dims],
        "activations": model.activations,
        "dtype": model.dtype,
        "preprocessing": model.preprocessing,
        "classes": list(model.classes),
        "threshold": 0.5,
        "training": model.training,
        "costs": [float(c) for c in model.costs],
    }
    meta_bytes = json.dumps(meta, indent=2, allow_nan=False).encode("utf-8")

    def write(handle) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr(META_NAME, meta_bytes)
            for name, array in arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, array, allow_pickle=False)
                archive.writestr(f"{name}.npy", buffer.getvalue())

    return atomic_write(path, write)


def load_model(path: str | os.PathLike) -> Model:
    """Read a model file written by :func:`save_model`; host (NumPy) parameters.

    Raises :class:`ModelFileError` for a missing, truncated, damaged or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            meta = _read_meta(archive, path)
            return _read_model(archive, meta, path)
    except DeepnetError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise ModelFileError(
            f"{path}: not a readable deepnet model file, or damaged/truncated "
            f"({str(exc).strip() or type(exc).__name__}); save the model again"
        ) from None


def _read_meta(archive: zipfile.ZipFile, path: Path) -> dict:
    try:
        info = archive.getinfo(META_NAME)
    except KeyError:
        raise ModelFileError(
            f"{path}: not a deepnet model file (no {META_NAME} inside); "
            "model files are written by `deepnet train` or deepnet.model_io.save_model"
        ) from None
    if info.file_size > MAX_META_BYTES:
        raise ModelFileError(f"{path}: {META_NAME} is {info.file_size} bytes, far too large")
    try:
        meta = json.loads(archive.read(META_NAME).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: {META_NAME} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a deepnet model file (format is not {FORMAT!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path}: format_version {version!r} is not valid")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: written with model format {version}, newer than this deepnet reads "
            f"({FORMAT_VERSION}); upgrade deepnet"
        )
    return meta


def _read_model(archive: zipfile.ZipFile, meta: dict, path: Path) -> Model:
    try:
        dims = check_layer_dims(meta.get("layer_dims"))
    except DeepnetError as exc:
        raise ModelFileError(f"{path}: bad layer_dims in {META_NAME}: {exc}") from None
    dtype = meta.get("dtype")
    if dtype not in DTYPES:
        raise ModelFileError(f"{path}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    expected_activations = ["relu"] * (len(dims) - 2) + ["sigmoid"]
    if meta.get("activations") != expected_activations:
        raise ModelFileError(
            f"{path}: activations {meta.get('activations')!r} are not the course network's "
            f"{expected_activations}"
        )
    classes = meta.get("classes")
    if not (
        isinstance(classes, list) and len(classes) == 2 and all(isinstance(c, str) for c in classes)
    ):
        raise ModelFileError(f"{path}: classes must be two names, got {classes!r}")
    costs = meta.get("costs", [])
    if not (isinstance(costs, list) and all(isinstance(c, (int, float)) for c in costs)):
        raise ModelFileError(f"{path}: costs must be a list of numbers")
    preprocessing = meta.get("preprocessing")
    if (
        not isinstance(preprocessing, dict)
        or math.prod(preprocessing.get("image_shape") or [0]) != dims[0]
    ):
        raise ModelFileError(
            f"{path}: preprocessing {preprocessing!r} does not give {dims[0]} inputs per picture"
        )

    parameters = {
        name: _read_array(archive, name, shape, dtype, path) for name, shape in _shapes(dims)
    }
    extra = sorted(set(archive.namelist()) - {META_NAME} - {f"{k}.npy" for k in parameters})
    if extra:
        raise ModelFileError(f"{path}: unexpected members {extra} for layer_dims {dims}")
    _check_parameters(parameters, dims, dtype, str(path))
    training = meta.get("training", {})
    return Model(
        parameters=parameters,
        layer_dims=dims,
        classes=(classes[0], classes[1]),
        dtype=dtype,
        model=str(meta.get("model", "L-layer")),
        training=training if isinstance(training, dict) else {},
        costs=[float(c) for c in costs],
        preprocessing=preprocessing,
        deepnet_version=str(meta.get("deepnet_version", "")),
        created=str(meta.get("created", "")),
    )


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
    raw = archive.read(member)  # checks the member's CRC-32
    buffer = io.BytesIO(raw)
    version = np.lib.format.read_magic(buffer)
    if version == (1, 0):
        stored_shape, fortran, stored_dtype = np.lib.format.read_array_header_1_0(buffer)
    elif version == (2, 0):
        stored_shape, fortran, stored_dtype = np.lib.format.read_array_header_2_0(buffer)
    else:
        raise ModelFileError(f"{path}: parameter {name} uses .npy version {version}")
    if stored_shape != shape or stored_dtype != np.dtype(dtype):
        raise ModelFileError(
            f"{path}: {name} is stored as {stored_dtype} {stored_shape}, but layer_dims and "
            f"dtype need {dtype} {shape}"
        )
    if len(raw) - buffer.tell() != data_bytes:
        raise ModelFileError(
            f"{path}: {name} holds {len(raw) - buffer.tell()} bytes of data, expected {data_bytes}"
        )
    flat = np.frombuffer(raw, dtype=stored_dtype, offset=buffer.tell())
    return flat.reshape(shape, order="F" if fortran else "C").copy()


def _check_parameters(parameters: dict, dims: list[int], dtype: str, where: str) -> None:
    expected = {name for name, _ in _shapes(dims)}
    if set(parameters) != expected:
        raise ModelFileError(
            f"{where}: parameters {sorted(parameters)} do not match layer_dims {dims} "
            f"(expected {sorted(expected)})"
        )
    for name, shape in _shapes(dims):
        array = parameters[name]
        if array.shape != shape:
            raise ModelFileError(
                f"{where}: {name} has shape {array.shape}, but layer_dims {dims} need {shape}"
            )
        if array.dtype != np.dtype(dtype):
            raise ModelFileError(f"{where}: {name} has dtype {array.dtype}, expected {dtype}")
        if not np.isfinite(array).all():
            raise ModelFileError(f"{where}: {name} holds NaN or infinite values")


def _shapes(dims: list[int]) -> list[tuple[str, tuple[int, int]]]:
    """(name, shape) of every parameter, in the course's order W1, b1, W2, ..."""
    out = []
    for layer in range(1, len(dims)):
        out += [(f"W{layer}", (dims[layer], dims[layer - 1])), (f"b{layer}", (dims[layer], 1))]
    return out
