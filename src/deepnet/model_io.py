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
from deepnet.constants import CLASS_NAMES, DTYPES, IMAGE_SHAPE
from deepnet.errors import DeepnetError, ModelFileError
from deepnet.fileio import atomic_write
from deepnet.initialization import check_layer_dims, place
from deepnet.paths import safe_text
from deepnet.spec import HIDDEN_ACTIVATIONS, Network, network_from_activations
from deepnet.zip_members import (
    _DAMAGED,
    _open_regular,
    _read_array,
    _read_member,
    _short,
    _short_text,
)

FORMAT = "deepnet-model"
FORMAT_VERSION = 1
META_NAME = "deepnet.json"
MAX_META_BYTES = 1 << 20  # the metadata is a few kilobytes; refuse anything absurd
# The most parameter memory a model file may declare: 2 GiB holds a 12288 x 20000 float64
# first layer, far beyond the course's networks. Checked from layer_dims before any read.
MAX_PARAMETER_BYTES = 2 << 30
MAX_CLASS_NAME = 256  # characters; class names are words

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
    classes: tuple[str, str] = CLASS_NAMES
    dtype: str = "float64"
    model: str = "L-layer"  # or "two-layer"
    training: dict[str, Any] = field(default_factory=dict)
    costs: list[float] = field(default_factory=list)
    preprocessing: dict[str, Any] = field(default_factory=lambda: dict(PREPROCESSING))
    deepnet_version: str = ""
    created: str = ""
    hidden: str = "relu"  # the hidden layers' activation (deepnet.spec.HIDDEN_ACTIVATIONS)
    # Exact arrays a checkpoint needs beyond the parameters (optimizer and fast-path state).
    state: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def activations(self) -> list[str]:
        """One activation per layer: ``hidden`` for the hidden layers, sigmoid for the output."""
        return Network(tuple(self.layer_dims), self.hidden).activations

    def parameters_on(self, device: str | None = None) -> dict[str, Any]:
        """The parameters copied onto ``device`` (resolved as usual) in the model's dtype."""
        return place(self.parameters, device, self.dtype)


def save_model(model: Model, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` atomically; parameters may live on any device."""
    from deepnet import __version__  # deepnet/__init__ may import this module

    if model.dtype not in DTYPES:
        raise ModelFileError(f"cannot save a model of dtype {model.dtype!r}; use one of {DTYPES}")
    classes = check_class_names(model.classes, "the model to save")
    costs = check_costs(list(model.costs), "the model to save")
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
        "classes": list(classes),
        "threshold": 0.5,
        "training": model.training,
        "costs": costs,
    }
    state = {
        f"state.{k}": np.ascontiguousarray(to_numpy(v), dtype=model.dtype)
        for k, v in model.state.items()
    }
    if state:
        meta["state_shapes"] = {k[6:]: list(v.shape) for k, v in state.items()}
        arrays |= state
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
    try:
        with _open_regular(path) as handle, zipfile.ZipFile(handle) as archive:
            meta = _read_meta(archive, path)
            return _read_model(archive, meta, path)
    except DeepnetError:
        raise
    except PermissionError:
        raise ModelFileError(f"{path}: permission denied (cannot read the model file)") from None
    except _DAMAGED as exc:
        raise ModelFileError(
            f"{path}: not a readable deepnet model file, or damaged/truncated "
            f"({_short_text(str(exc).strip() or type(exc).__name__)}); save the model again"
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
        meta = json.loads(
            _read_member(archive, info, path).decode("utf-8"), parse_constant=_no_constants
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = _short_text(str(exc))
        raise ModelFileError(f"{path}: {META_NAME} is not valid JSON ({reason})") from None
    except _ConstantError as exc:
        raise ModelFileError(
            f"{path}: {META_NAME} holds {exc}, which deepnet never writes; the file was edited "
            "or is not deepnet's"
        ) from None
    except RecursionError:  # json recurses once per nesting level: "[[[[..." overflows it
        raise ModelFileError(f"{path}: {META_NAME} is nested too deeply to be ours") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a deepnet model file (format is not {FORMAT!r})")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path}: format_version {_short(version)} is not valid")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: written with model format {version}, newer than this deepnet reads "
            f"({FORMAT_VERSION}); upgrade deepnet"
        )
    return meta


def _read_model(archive: zipfile.ZipFile, meta: dict, path: Path) -> Model:
    layer_dims = meta.get("layer_dims")
    try:
        dims = check_layer_dims(layer_dims if isinstance(layer_dims, list) else None)
    except DeepnetError:
        raise ModelFileError(
            f"{path}: bad layer_dims in {META_NAME}: {_short(layer_dims)}; expected a list of "
            "at least 2 positive integers"
        ) from None
    dtype = meta.get("dtype")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ModelFileError(f"{path}: dtype {_short(dtype)} is not one of {', '.join(DTYPES)}")
    network = network_from_activations(dims, meta.get("activations"))
    if network is None:
        raise ModelFileError(
            f"{path}: activations {_short(meta.get('activations'))} are not a network deepnet "
            f"runs: one of {', '.join(HIDDEN_ACTIVATIONS)} for the {len(dims) - 2} hidden "
            "layers, then sigmoid"
        )
    classes = check_class_names(meta.get("classes"), str(path))
    costs = check_costs(meta.get("costs", []), str(path))
    model = meta.get("model", "L-layer")
    if model not in ("L-layer", "two-layer"):
        raise ModelFileError(f"{path}: model {_short(model)} is not L-layer or two-layer")
    preprocessing = meta.get("preprocessing")
    image_shape = preprocessing.get("image_shape") if isinstance(preprocessing, dict) else None
    if not (
        isinstance(image_shape, list)
        and len(image_shape) <= 4
        and all(type(n) is int and 0 < n <= dims[0] for n in image_shape)
        and math.prod(image_shape) == dims[0]
    ):
        raise ModelFileError(
            f"{path}: preprocessing image_shape {_short(image_shape)} does not give "
            f"{dims[0]} inputs per picture"
        )

    declared = parameter_bytes(dims, dtype)
    if declared > MAX_PARAMETER_BYTES:
        raise ModelFileError(
            f"{path}: layer_dims {_short(dims)} declare {declared / 2**30:.1f} GiB of {dtype} "
            f"parameters, more than deepnet loads ({MAX_PARAMETER_BYTES / 2**30:.0f} GiB)"
        )
    parameters = {
        name: _read_array(archive, name, shape, dtype, path) for name, shape in _shapes(dims)
    }
    state = _read_state(archive, meta.get("state_shapes", {}), dims, dtype, path)
    known = {f"{k}.npy" for k in parameters} | {f"state.{k}.npy" for k in state}
    extra = sorted(set(archive.namelist()) - {META_NAME} - known)
    if extra:
        raise ModelFileError(f"{path}: unexpected members {extra} for layer_dims {dims}")
    _check_parameters(parameters, dims, dtype, str(path))
    training = meta.get("training", {})
    return Model(
        parameters=parameters,
        layer_dims=dims,
        classes=classes,
        dtype=dtype,
        model=model,
        training=training if isinstance(training, dict) else {},
        costs=costs,
        preprocessing=preprocessing,
        deepnet_version=str(meta.get("deepnet_version", "")),
        created=str(meta.get("created", "")),
        hidden=network.hidden,
        state=state,
    )


def _read_state(
    archive: zipfile.ZipFile, shapes: Any, dims: list[int], dtype: str, path: Path
) -> dict[str, np.ndarray]:
    """A checkpoint's state arrays (optimizer and fast-path state), each at most 16 times
    the largest parameter (a velocity kept per example can be wider than W1)."""
    largest = 16 * max(a * b for a, b in zip(dims[1:], dims[:-1], strict=True))
    if not isinstance(shapes, dict) or len(shapes) > 8 * len(dims) + 8:
        raise ModelFileError(f"{path}: state_shapes must be a small dict of name: shape")
    state = {}
    for name, shape in shapes.items():
        if not (
            isinstance(name, str)
            and name.replace(".", "").replace("_", "").isalnum()
            and isinstance(shape, list)
            and 1 <= len(shape) <= 2
            and all(type(n) is int and n >= 0 for n in shape)
            and math.prod(shape) <= largest
        ):
            raise ModelFileError(f"{path}: bad state array {_short(name)}: {_short(shape)}")
        state[name] = _read_array(archive, f"state.{name}", tuple(shape), dtype, path)
    return state


class _ConstantError(Exception):
    """NaN, Infinity or -Infinity in deepnet.json: json.dumps(allow_nan=False) never writes them."""


def _no_constants(name: str) -> Any:
    raise _ConstantError(name)


def parameter_bytes(layer_dims: list[int], dtype: str) -> int:
    """The bytes of all parameters ``layer_dims`` declare in ``dtype`` (W and b of each layer)."""
    count = sum(n * (p + 1) for p, n in zip(layer_dims[:-1], layer_dims[1:], strict=False))
    return count * np.dtype(dtype).itemsize


def check_costs(costs: Any, where: str) -> list[float]:
    """A run's recorded costs as floats: a list of finite numbers, else :class:`ModelFileError`.

    For model files and checkpoints (NaN or Infinity in a checkpoint's costs is refused on
    load); ``where`` starts the message (the file's path).
    """
    values = None
    try:
        if isinstance(costs, list) and all(
            isinstance(c, (int, float)) and not isinstance(c, bool) for c in costs
        ):
            values = [float(c) for c in costs]
    except OverflowError:
        pass
    if values is None:
        raise ModelFileError(f"{where}: costs must be a list of numbers, got {_short(costs)}")
    bad = [i for i, c in enumerate(values) if not math.isfinite(c)]
    if bad:
        raise ModelFileError(
            f"{where}: recorded cost {bad[0]} of {len(values)} is {values[bad[0]]}; the costs "
            "of a deepnet run are finite numbers (the file was edited or damaged)"
        )
    return values


def check_class_names(classes: Any, where: str) -> tuple[str, str]:
    """Two different, non-empty, printable class names of at most 256 characters.

    Names with control characters (terminal escape codes, newlines) are refused, so that
    ``evaluate`` and ``predict`` never print them; :func:`deepnet.paths.safe_text` shows one.
    """
    if not (
        isinstance(classes, (list, tuple))
        and len(classes) == 2
        and all(isinstance(c, str) for c in classes)
    ):
        raise ModelFileError(f"{where}: classes must be two names, got {_short(classes)}")
    for name in classes:
        if not name or len(name) > MAX_CLASS_NAME or not name.isprintable():
            raise ModelFileError(
                f"{where}: class name {safe_text(_short(name))} is not a printable name of 1 to "
                f"{MAX_CLASS_NAME} characters (control characters such as terminal escape codes "
                "are refused)"
            )
    if classes[0] == classes[1]:
        raise ModelFileError(f"{where}: classes must be two different names, got {_short(classes)}")
    return classes[0], classes[1]


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
