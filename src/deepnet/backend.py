"""The device front: which array namespace to use, and moving arrays between devices.

This is the one module that imports CuPy, and it does so lazily. Resolution order for the
device: an explicit ``device=`` argument, then the innermost ``use_device()`` context, then
``$DEEPNET_DEVICE``, then ``"cpu"``. Asking for ``"cuda"`` without CuPy or without a usable
GPU raises :class:`DeviceError`; deepnet never falls back to the CPU silently.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from deepnet.errors import DeviceError
from deepnet.install import install_hint

DEVICES = ("cpu", "cuda")
ENV_VAR = "DEEPNET_DEVICE"

_context_device: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "deepnet_device", default=None
)

_INSTALL_HINT = (
    f"install CuPy for your CUDA driver with {install_hint('cuda12')} (CUDA 12.x; cuda13 for "
    "CUDA 13.x), or use device='cpu' / DEEPNET_DEVICE=cpu"
)
_GPU_HINT = (
    "check that `nvidia-smi` lists a GPU (in Docker: `docker run --gpus all ...`), "
    "or use device='cpu' / DEEPNET_DEVICE=cpu"
)


def _normalize(device: Any, source: str) -> str:
    name = str(device).strip().lower()
    if name not in DEVICES:
        raise DeviceError(
            f"unknown device {device!r} (from {source}); valid devices are: {', '.join(DEVICES)}"
        )
    return name


def _cupy() -> ModuleType:
    """Import CuPy and check that a GPU is usable, or raise DeviceError saying why."""
    try:
        import cupy
    except ImportError:
        raise DeviceError(
            f"device 'cuda' needs CuPy, which is not installed: {_INSTALL_HINT}"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError, missing driver library, ...
        raise DeviceError(
            f"CuPy is installed but no usable CUDA GPU was found ({exc}); {_GPU_HINT}"
        ) from None
    if count < 1:
        raise DeviceError(f"CuPy is installed but no CUDA GPU is visible; {_GPU_HINT}")
    return cupy


def cupy_module() -> ModuleType:
    """The raw CuPy module, for GPU-only code (deepnet.cuda_step); DeviceError without a GPU."""
    return _cupy()


def resolve_device(device: str | None = None) -> str:
    """The device to use: ``device`` > ``use_device()`` > ``$DEEPNET_DEVICE`` > ``"cpu"``."""
    if device is not None:
        name = _normalize(device, "the device argument")
    elif (ctx := _context_device.get()) is not None:
        name = ctx
    elif os.environ.get(ENV_VAR, "").strip():
        name = _normalize(os.environ[ENV_VAR], f"${ENV_VAR}")
    else:
        name = "cpu"
    if name == "cuda":
        _cupy()
    return name


@contextlib.contextmanager
def use_device(device: str) -> Iterator[str]:
    """Make ``device`` the default inside a ``with`` block (overridden by ``device=``)."""
    name = _normalize(device, "use_device()")
    token = _context_device.set(name)
    try:
        yield name
    finally:
        _context_device.reset(token)


def cuda_available() -> bool:
    """True when CuPy is installed and sees at least one GPU."""
    try:
        _cupy()
    except DeviceError:
        return False
    return True


def namespace_for(device: str | None = None) -> ModuleType:
    """The Array API namespace for a device: NumPy on ``cpu``, CuPy on ``cuda``."""
    if resolve_device(device) == "cuda":
        return array_api_compat.array_namespace(_cupy().empty(0))
    return array_api_compat.array_namespace(np.empty(0))


def array_namespace(*arrays: Any) -> ModuleType:
    """The namespace shared by ``arrays`` (None entries and Python scalars are ignored).

    Like ``cupy.get_array_module``: kernels follow their inputs, never the environment.
    """
    found = [a for a in arrays if a is not None and not isinstance(a, (int, float, bool))]
    if not found:
        return array_api_compat.array_namespace(np.empty(0))
    try:
        return array_api_compat.array_namespace(*found)
    except TypeError as exc:
        kinds = sorted({f"{type(a).__module__}.{type(a).__name__}" for a in found})
        raise DeviceError(
            "arrays from different libraries or devices were mixed in one call "
            f"({', '.join(kinds)}); move them to one device first, "
            "e.g. with deepnet.to_device(x, 'cpu')"
        ) from exc


def device_of(x: Any) -> str:
    """``"cuda"`` for CuPy arrays, ``"cpu"`` for NumPy, else the array library's name."""
    if array_api_compat.is_cupy_array(x):
        return "cuda"
    if array_api_compat.is_numpy_array(x):
        return "cpu"
    return type(x).__module__.split(".")[0]


def is_host_array(x: Any) -> bool:
    """True for NumPy arrays (and NumPy scalars)."""
    return array_api_compat.is_numpy_array(x) or isinstance(x, np.generic)


def to_device(x: Any, device: str | None = None, dtype: Any = None) -> Any:
    """Copy ``x`` (NumPy, CuPy or a nested list) onto ``device``, optionally casting it."""
    xp = namespace_for(device)
    on_gpu = array_api_compat.is_cupy_array(x)
    if (on_gpu and not array_api_compat.is_cupy_namespace(xp)) or not (
        on_gpu or is_host_array(x) or isinstance(x, (list, tuple, int, float))
    ):
        x = to_numpy(x)
    dtype = getattr(xp, str(np.dtype(dtype))) if dtype is not None else None
    return xp.asarray(x, dtype=dtype)


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy of any supported array (GPU arrays are copied to the host)."""
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_numpy_array(x) or isinstance(x, (list, tuple, int, float)):
        return np.asarray(x)
    return np.from_dlpack(x)


def synchronize(device: str | None = None) -> None:
    """Wait for queued GPU work to finish; a no-op on the CPU."""
    if resolve_device(device) == "cuda":
        _cupy().cuda.get_current_stream().synchronize()


def gpu_description() -> str | None:
    """The GPU's name and memory, or None without a usable GPU."""
    if not cuda_available():
        return None
    cupy = _cupy()
    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    free, total = dev.mem_info
    return f"{name}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free)"
