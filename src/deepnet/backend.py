"""The device front: which array library and device to use, and moving arrays between them.

This is the one module that imports CuPy, PyTorch and JAX, each lazily (only when asked for).

Two questions, answered in a fixed order:

- **The library** (``numpy``, ``cupy``, ``torch``, ``jax``): an explicit ``backend=`` argument,
  then the innermost ``use_backend()`` context, then ``$DEEPNET_BACKEND``; with none of them,
  the device decides as it always has: NumPy on ``cpu``, CuPy on ``cuda``.
- **The device**: one written into the backend (``"torch:cuda"``, ``"jax:gpu"``), then an
  explicit ``device=`` argument, then ``use_device()``, then ``$DEEPNET_DEVICE``, then the
  library's own default (torch: ``cpu``; JAX: its default device).

``DEEPNET_DEVICE=cpu|cuda`` alone still means NumPy or CuPy. A library that is not installed,
or a device it cannot reach, raises :class:`DeviceError` naming the install command; deepnet
never falls back to another library or to the CPU silently.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from deepnet.errors import DeviceError
from deepnet.install import install_hint

DEVICES = ("cpu", "cuda")  # what DEEPNET_DEVICE and use_device() accept
LIBRARIES = ("numpy", "cupy", "torch", "jax")
ENV_VAR = "DEEPNET_DEVICE"
BACKEND_ENV_VAR = "DEEPNET_BACKEND"

_context_device: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "deepnet_device", default=None
)
_context_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "deepnet_backend", default=None
)


_INSTALL_HINT = (
    f"install CuPy for your CUDA driver with {install_hint('cuda12')} (CUDA 12.x; cuda13 for "
    "CUDA 13.x), or use device='cpu' / DEEPNET_DEVICE=cpu"
)
_GPU_HINT = (
    "check that `nvidia-smi` lists a GPU (in Docker: `docker run --gpus all ...`), "
    "or use device='cpu' / DEEPNET_DEVICE=cpu"
)
_TORCH_GPU_HINT = (
    "this needs a GPU build of PyTorch (https://pytorch.org/get-started/locally/) and a "
    "visible GPU; or use backend 'torch:cpu'"
)
_JAX_GPU_HINT = (
    "this needs JAX's CUDA build (the jax package's cuda12 extra, see JAX's install guide) "
    "and a visible GPU; or use backend 'jax:cpu'"
)


def _normalize(device: Any, source: str) -> str:
    name = str(device).strip().lower()
    if name not in DEVICES:
        hint = ""
        if name.split(":")[0] in ("mps", "gpu", "tpu"):
            hint = f"; for a torch or JAX device name the library too, e.g. 'torch:{name}'"
        raise DeviceError(
            f"unknown device {device!r} (from {source}); valid devices are: "
            f"{', '.join(DEVICES)}{hint}"
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
    """The raw CuPy module, for GPU-only code (deepnet.cuda); DeviceError without a GPU."""
    return _cupy()


def _library(name: str) -> ModuleType:
    """Import torch or jax, or raise DeviceError naming the extra that installs it."""
    try:
        if name == "torch":
            import torch

            return torch
        import jax

        return jax
    except ImportError:
        raise DeviceError(
            f"backend {name!r} needs {'PyTorch' if name == 'torch' else 'JAX'}, which is not "
            f"installed: {install_hint(name)}"
        ) from None


def resolve_device(device: str | None = None) -> str:
    """The NumPy/CuPy device: ``device`` > ``use_device()`` > ``$DEEPNET_DEVICE`` > ``"cpu"``."""
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


@dataclass(frozen=True)
class Backend:
    """A resolved array library and device: ``library`` is one of :data:`LIBRARIES`,
    ``device`` its canonical name (``"cpu"``, ``"cuda"``, ``"cuda:0"``, ``"mps"``, ``"gpu:0"``).

    ``str(backend)`` (``"torch:cuda:0"``) is accepted back by every ``backend=`` argument.
    """

    library: str
    device: str
    native: Any = field(default=None, compare=False, repr=False)  # torch.device / jax Device

    def __str__(self) -> str:
        return f"{self.library}:{self.device}"

    @property
    def xp(self) -> ModuleType:
        """The Array API namespace of this library (array-api-compat's wrapper)."""
        if self.library == "numpy":
            return array_api_compat.array_namespace(np.empty(0))
        if self.library == "cupy":
            return array_api_compat.array_namespace(_cupy().empty(0))
        if self.library == "torch":
            return array_api_compat.array_namespace(_library("torch").empty(0))
        return array_api_compat.array_namespace(_library("jax").numpy.empty(0))


def _split(spec: Any, source: str) -> tuple[str, str | None]:
    """``"torch:cuda:0"`` -> ``("torch", "cuda:0")``; ``"jax"`` -> ``("jax", None)``."""
    if isinstance(spec, Backend):
        return spec.library, spec.device
    text = str(spec).strip().lower()
    library, _, device = text.partition(":")
    if library not in LIBRARIES:
        raise DeviceError(
            f"unknown backend {spec!r} (from {source}); valid backends are: "
            f"{', '.join(LIBRARIES)}, optionally with a device, e.g. 'torch:cuda' or 'jax:gpu'"
        )
    return library, device or None


def _is_spec(device: Any) -> bool:
    return isinstance(device, Backend) or str(device).strip().lower().split(":")[0] in LIBRARIES


def _torch_backend(device: str) -> Backend:
    torch = _library("torch")
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not index.isdigit()):
        raise DeviceError(
            f"unknown torch device {device!r}; valid ones are: cpu, cuda, cuda:N, mps"
        )
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        n = int(index) if index else (torch.cuda.current_device() if count else 0)
        if n >= count:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only"
            raise DeviceError(
                f"torch:{device}: this PyTorch ({torch.__version__}, {build} build) sees "
                f"{count} CUDA GPU(s); {_TORCH_GPU_HINT}"
            )
        device = f"cuda:{n}"
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(
            "torch:mps: this PyTorch has no usable Apple GPU (MPS needs macOS on Apple "
            "silicon and an arm64 PyTorch); use backend 'torch:cpu'"
        )
    return Backend("torch", device, torch.device(device))


def _jax_backend(device: str | None) -> Backend:
    jax = _library("jax")
    if device is None:
        found = jax.devices()[0]
    else:
        kind, _, index = device.partition(":")
        platform = {"cuda": "gpu", "rocm": "gpu"}.get(kind, kind)
        if platform not in ("cpu", "gpu", "tpu") or (index and not index.isdigit()):
            raise DeviceError(
                f"unknown JAX device {device!r}; valid ones are: cpu, gpu, gpu:N, tpu"
            )
        try:
            found = jax.devices(platform)[int(index or 0)]
        except (RuntimeError, IndexError) as exc:
            hint = _JAX_GPU_HINT if platform == "gpu" else "or use backend 'jax:cpu'"
            raise DeviceError(f"jax:{device}: JAX cannot reach it ({exc}); {hint}") from None
    return Backend("jax", f"{found.platform}:{found.id}", found)


def resolve_backend(backend: str | Backend | None = None, device: str | None = None) -> Backend:
    """The library and device to use, in the order the module docstring gives.

    ``device`` may also be a whole ``"library:device"`` spec (what :func:`device_of` returns).
    """
    if device is not None and _is_spec(device):
        if backend is not None and _split(backend, "backend=")[0] != _split(device, "")[0]:
            raise DeviceError(f"backend={backend!r} and device={device!r} disagree; give one")
        backend, device = device, None
    if backend is None:
        backend = _context_backend.get()
    if backend is None and os.environ.get(BACKEND_ENV_VAR, "").strip():
        backend = os.environ[BACKEND_ENV_VAR]
        source = f"${BACKEND_ENV_VAR}"
    else:
        source = "the backend argument or use_backend()"
    if backend is None:  # as before backends existed: the device picks NumPy or CuPy
        name = resolve_device(device)
        return Backend("cupy" if name == "cuda" else "numpy", name)
    library, own = _split(backend, source)
    if own is None and device is not None:
        own = str(device).strip().lower()
    if own is None:  # use_device() / DEEPNET_DEVICE name the device within any library
        own = _context_device.get() or os.environ.get(ENV_VAR, "").strip().lower() or None
    if library == "torch":
        return _torch_backend(own or "cpu")
    if library == "jax":
        return _jax_backend(own)
    want = "cuda" if library == "cupy" else "cpu"
    if own is not None and own != want:
        other = "cupy, torch:cuda or jax:gpu" if library == "numpy" else "numpy or torch:cpu"
        raise DeviceError(f"{library} runs on {want} only, not {own!r}; for that use {other}")
    if library == "cupy":
        _cupy()
    return Backend(library, want)


@contextlib.contextmanager
def use_backend(backend: str | Backend) -> Iterator[str]:
    """Make ``backend`` (``"torch"``, ``"jax:cpu"``, ...) the default inside a ``with`` block."""
    library, device = _split(backend, "use_backend()")
    spec = library if device is None else f"{library}:{device}"
    token = _context_backend.set(spec)
    try:
        yield spec
    finally:
        _context_backend.reset(token)


def cli_device(backend: str | None, device: str | None, dtype: str | None = None) -> str:
    """The place ``--backend``/``--device`` (then ``$DEEPNET_BACKEND``/``$DEEPNET_DEVICE``)
    name, as a string every ``device=`` argument takes back: ``"cpu"``/``"cuda"`` for
    NumPy/CuPy as before, else ``"torch:cpu"``, ``"jax:cpu:0"``, ...

    For JAX in ``dtype`` float64 it turns on JAX's 64-bit mode: the command line does this,
    once, before any array is made; library code never flips it (it refuses instead).
    """
    chosen = resolve_backend(backend, device)
    if chosen.library in ("numpy", "cupy"):
        return chosen.device
    if chosen.library == "jax" and dtype == "float64":
        _library("jax").config.update("jax_enable_x64", True)
    return str(chosen)


def describe(device: str) -> str:
    """A device string as the reports print it: ``"torch:cpu (PyTorch 2.13.0)"``."""
    chosen = resolve_backend(device=device)
    if chosen.library == "torch":
        return f"{chosen} (PyTorch {_library('torch').__version__})"
    if chosen.library == "jax":
        return f"{chosen} (JAX {_library('jax').__version__})"
    return str(chosen)


def cuda_available() -> bool:
    """True when CuPy is installed and sees at least one GPU."""
    try:
        _cupy()
    except DeviceError:
        return False
    return True


def namespace_for(device: str | None = None, backend: str | Backend | None = None) -> ModuleType:
    """The Array API namespace for a device (NumPy on ``cpu``, CuPy on ``cuda``) or backend."""
    return resolve_backend(backend, device).xp


def array_namespace(*arrays: Any) -> ModuleType:
    """The namespace shared by ``arrays`` (None entries and Python scalars are ignored).

    Like ``cupy.get_array_module``: kernels follow their inputs, never the environment.
    Torch tensors and JAX arrays must also share one device.
    """
    found = [a for a in arrays if a is not None and not isinstance(a, (int, float, bool))]
    if not found:
        return array_api_compat.array_namespace(np.empty(0))
    try:
        xp = array_api_compat.array_namespace(*found)
    except TypeError as exc:
        kinds = sorted({f"{type(a).__module__}.{type(a).__name__}" for a in found})
        raise DeviceError(
            "arrays from different libraries or devices were mixed in one call "
            f"({', '.join(kinds)}); move them to one device first, "
            "e.g. with deepnet.to_device(x, 'cpu')"
        ) from exc
    if len(found) > 1 and not array_api_compat.is_numpy_namespace(xp):
        places = {str(array_api_compat.device(a)) for a in found}
        if len(places) > 1:
            raise DeviceError(
                f"arrays on different devices ({', '.join(sorted(places))}) were mixed in one "
                "call; move them to one device first, e.g. with deepnet.to_device(x, 'torch:cpu')"
            )
    return xp


def device_of(x: Any) -> str:
    """Where ``x`` lives, as a string :func:`to_device` accepts back.

    ``"cpu"`` for NumPy, ``"cuda"`` for CuPy, ``"torch:cpu"``, ``"torch:cuda:0"``,
    ``"torch:mps:0"``, ``"jax:cpu:0"``, ``"jax:gpu:0"``; other libraries' names otherwise.
    """
    if array_api_compat.is_cupy_array(x):
        return "cuda"
    if array_api_compat.is_numpy_array(x):
        return "cpu"
    if array_api_compat.is_torch_array(x):
        return f"torch:{x.device}"
    if array_api_compat.is_jax_array(x):
        found = array_api_compat.device(x)
        return f"jax:{found.platform}:{found.id}"
    return type(x).__module__.split(".")[0]


def float64_on(x: Any) -> bool:
    """True when float64 arrays can be made where ``x`` lives (not JAX in its default 32-bit
    mode, not torch on Apple's MPS)."""
    if array_api_compat.is_jax_array(x):
        return bool(_library("jax").config.jax_enable_x64)
    if array_api_compat.is_torch_array(x):
        return x.device.type != "mps"
    return True


def is_host_array(x: Any) -> bool:
    """True for NumPy arrays (and NumPy scalars)."""
    return array_api_compat.is_numpy_array(x) or isinstance(x, np.generic)


def _dtype_name(dtype: Any) -> str | None:
    if dtype is None:
        return None
    return str(dtype).removeprefix("torch.")  # "float32", np.float32, torch.float32 alike


def _host(x: Any) -> np.ndarray:
    """A NumPy view or copy of anything :func:`to_numpy` reads, writable for torch."""
    host = to_numpy(x) if not isinstance(x, (list, tuple, int, float)) else np.asarray(x)
    return host if host.flags.writeable else host.copy()


def to_device(
    x: Any, device: str | None = None, dtype: Any = None, *, backend: str | Backend | None = None
) -> Any:
    """Copy ``x`` (any supported array, or a nested list) onto a device, optionally casting it.

    ``device`` and ``backend`` are resolved by :func:`resolve_backend`: ``to_device(x, "cpu")``
    gives NumPy and ``"cuda"`` CuPy (unless a backend is chosen), ``"torch:cuda"`` a tensor on
    the GPU, ``"jax"`` an array on JAX's default device. Arrays already there are not copied.
    """
    target = resolve_backend(backend, device)
    name = _dtype_name(dtype)
    if target.library == "torch":
        torch = _library("torch")
        want = getattr(torch, name) if name else None
        if target.device.startswith("mps") and (name or str(getattr(x, "dtype", ""))) in (
            "float64", "torch.float64",
        ):  # fmt: skip
            raise DeviceError("torch:mps has no float64 (Apple GPUs lack it): use dtype='float32'")
        if array_api_compat.is_torch_array(x):
            return x.to(device=target.native, dtype=want)
        return torch.as_tensor(_host(x), dtype=want, device=target.native)
    if target.library == "jax":
        jax = _library("jax")
        host = x if array_api_compat.is_jax_array(x) else _host(x)
        kind = np.dtype(name) if name else np.dtype(str(host.dtype))
        if kind.itemsize == 8 and kind.kind in "fiu" and not jax.config.jax_enable_x64:
            raise DeviceError(
                f"JAX is in 32-bit mode, so {kind} would silently become a 32-bit type: "
                "enable 64-bit with jax.config.update('jax_enable_x64', True) at startup "
                "(or JAX_ENABLE_X64=1), or ask for dtype='float32'"
            )
        if name and str(host.dtype) != name:
            host = host.astype(name)
        return jax.device_put(host, target.native)
    xp = target.xp
    on_gpu = array_api_compat.is_cupy_array(x)
    if (on_gpu and target.library != "cupy") or not (
        on_gpu or is_host_array(x) or isinstance(x, (list, tuple, int, float))
    ):
        x = to_numpy(x)
    return xp.asarray(x, dtype=getattr(xp, name) if name else None)


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy array of any supported array: GPU arrays are copied to the host, CPU arrays
    may be shared (torch and JAX CPU arrays, like NumPy's own, are not copied)."""
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_numpy_array(x) or isinstance(x, (list, tuple, int, float)):
        return np.asarray(x)
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_jax_array(x):
        return np.asarray(x)
    return np.from_dlpack(x)


def synchronize(device: str | Backend | None = None, *arrays: Any) -> None:
    """Wait for queued device work to finish; a no-op on the CPU.

    CuPy and torch wait for their device; JAX has no device-wide wait, so pass the arrays
    whose values are awaited (``synchronize("jax", out)``), as ``jax.block_until_ready`` does.
    """
    if device is None and arrays:
        device = device_of(arrays[0])
    target = resolve_backend(device=device) if not isinstance(device, Backend) else device
    if target.library == "cupy":
        _cupy().cuda.get_current_stream().synchronize()
    elif target.library == "torch" and target.device.startswith("cuda"):
        _library("torch").cuda.synchronize(target.native)
    elif target.library == "torch" and target.device.startswith("mps"):
        _library("torch").mps.synchronize()
    elif target.library == "jax" and arrays:
        _library("jax").block_until_ready(arrays)


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
