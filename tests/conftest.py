"""Shared fixtures: one backend grid (namespace x device x dtype) and the real data.

The grid is :data:`GRID`, one list, in the spirit of scikit-learn's
``yield_namespace_device_dtype_combinations``: every backend-aware test takes the ``backend``
fixture and runs once per entry. numpy, array-api-strict, torch-cpu and jax-cpu run wherever
their library is installed; torch-cuda, torch-mps, cupy and jax-gpu show as skipped (with
the reason) where the library or the device is absent. Set ``DEEPNET_REQUIRE_BACKENDS``
(e.g. ``torch-cpu,jax-cpu``) to turn those skips into failures, as CI should.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np
import pytest

from deepnet.backend import cuda_available, to_numpy

# (namespace, device): what the kernels must run on.
NAMESPACE_DEVICES = [
    ("numpy", "cpu"),
    ("array_api_strict", "cpu"),
    ("torch", "cpu"),
    ("jax", "cpu"),
    ("cupy", "cuda"),
    ("torch", "cuda"),
    ("torch", "mps"),
    ("jax", "gpu"),
]
DTYPES = ("float64", "float32")
# Closeness to the course's printed 8 decimals in float64; float32 keeps ~7 digits.
TOLERANCES = {"float64": dict(rtol=0, atol=5e-9), "float32": dict(rtol=2e-5, atol=2e-6)}


def namespace_device_dtype_combinations(dtypes: tuple[str, ...] = DTYPES) -> list[Any]:
    """The grid as pytest params with ids like ``torch-cpu-float64``; GPU entries marked
    ``cuda`` (CuPy) or ``gpu`` (torch and JAX), so ``-m "not gpu"`` can leave them out."""
    params = []
    for namespace, device in NAMESPACE_DEVICES:
        marks = []
        if device != "cpu":
            marks.append(pytest.mark.cuda if namespace == "cupy" else pytest.mark.gpu)
        params += [
            pytest.param((namespace, device, d), id=f"{namespace}-{device}-{d}", marks=marks)
            for d in dtypes
        ]
    return params


GRID = namespace_device_dtype_combinations()
GRID64 = namespace_device_dtype_combinations(("float64",))


@dataclass(frozen=True)
class Backend:
    """One grid entry: an array library on a device, in a dtype; makes and reads its arrays."""

    name: str  # the namespace: numpy, array_api_strict, torch, jax, cupy
    device_name: str  # cpu, cuda, mps, gpu
    dtype: str  # float64 or float32
    xp: ModuleType  # the Array API namespace the kernels see (array-api-compat's wrapper)
    device: Any  # the library's device object (None for NumPy and CuPy)

    @property
    def id(self) -> str:
        return f"{self.name}-{self.device_name}-{self.dtype}"

    @property
    def tol(self) -> dict[str, float]:
        """assert_allclose tolerances for a value printed to 8 decimals, in this dtype."""
        return TOLERANCES[self.dtype]

    def asarray(self, x: Any, dtype: str | None = None) -> Any:
        """A host array (or nested list) as this backend's array, in ``dtype`` (default: own)."""
        dtype = dtype or self.dtype
        host = np.asarray(x, dtype=dtype)
        if self.device is None:
            return self.xp.asarray(host, dtype=getattr(self.xp, dtype))
        return self.xp.asarray(host, dtype=getattr(self.xp, dtype), device=self.device)

    def is_own(self, x: Any) -> bool:
        """True when ``x`` is an array of this library, on this backend's device."""
        if not OWNS[self.name](x):
            return False
        return self.device is None or str(array_api_compat.device(x)) == str(self.device)


OWNS = {
    "numpy": array_api_compat.is_numpy_array,
    "array_api_strict": lambda x: type(x).__module__.startswith("array_api_strict"),
    "cupy": array_api_compat.is_cupy_array,
    "torch": array_api_compat.is_torch_array,
    "jax": array_api_compat.is_jax_array,
}


def _required() -> set[str]:
    return {s.strip() for s in os.environ.get("DEEPNET_REQUIRE_BACKENDS", "").split(",") if s}


def _skip(namespace: str, device: str, why: str) -> None:
    """Skip this grid entry, or fail when DEEPNET_REQUIRE_BACKENDS asks for it."""
    if f"{namespace}-{device}" in _required():
        pytest.fail(f"{namespace}-{device} is required (DEEPNET_REQUIRE_BACKENDS) but {why}")
    pytest.skip(f"{namespace}-{device}: {why}")


def _import(name: str, device: str, hint: str) -> ModuleType:
    try:
        return __import__(name)
    except ImportError:
        _skip(name, device, f"{name} is not installed ({hint})")
        raise  # not reached


def _load(namespace: str, device: str, dtype: str) -> Backend:
    if namespace == "numpy":
        return Backend(
            namespace, device, dtype, array_api_compat.array_namespace(np.empty(0)), None
        )
    if namespace == "array_api_strict":
        strict = _import("array_api_strict", device, "the test extra installs it")
        return Backend(namespace, device, dtype, strict, None)
    if namespace == "cupy":
        if not cuda_available():
            _skip(namespace, device, "needs CuPy and a CUDA GPU (none usable here)")
        import cupy  # only reached with a GPU

        xp = array_api_compat.array_namespace(cupy.empty(0))
        return Backend(namespace, device, dtype, xp, None)
    if namespace == "torch":
        torch = _import("torch", device, "pip install -e '.[torch]'")
        if device == "cuda" and not torch.cuda.is_available():
            _skip(namespace, device, "no CUDA GPU visible to this PyTorch")
        if device == "mps":
            if not torch.backends.mps.is_available():
                _skip(namespace, device, "no Apple GPU (MPS) available")
            if dtype == "float64":
                _skip(namespace, device, "MPS has no float64")
        xp = array_api_compat.array_namespace(torch.empty(0))
        return Backend(namespace, device, dtype, xp, torch.device(device))
    jax = _import("jax", device, "pip install -e '.[jax]'")
    try:
        found = jax.devices(device)[0]
    except RuntimeError:
        _skip(namespace, device, f"JAX has no {device} device here")
    return Backend(namespace, device, dtype, jax.numpy, found)


# Test modules whose tolerances are float64's: their ``backend`` tests get the float64 column
# of the grid only (every library and device), until they say what float32 should meet.
FLOAT64_ONLY_MODULES = {
    "test_distributed", "test_fastpath", "test_blocked_step", "test_course_tools",
    "test_optimizers", "test_engine", "test_gram_batches",
}  # fmt: skip


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that takes ``backend`` over the grid (unless it parametrizes it itself)."""
    if "backend" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if "backend" in (names.replace(" ", "").split(",") if isinstance(names, str) else names):
            return
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    grid = GRID64 if module in FLOAT64_ONLY_MODULES else GRID
    metafunc.parametrize("backend", grid, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each test using it runs once per grid entry; absent ones show as skipped.

    JAX runs with 64-bit types enabled for the float64 entries only, and only for the
    test's duration (``jax.enable_x64``): the float32 entries see JAX's default 32-bit mode.
    """
    namespace, device, dtype = request.param
    chosen = _load(namespace, device, dtype)
    context: Any = contextlib.nullcontext()
    if namespace == "jax" and dtype == "float64":
        import jax

        context = jax.enable_x64(True)
    with context:
        yield chosen


@pytest.fixture
def host():
    """Read any backend's array back as NumPy."""
    return to_numpy


def _data_dir() -> Path | None:
    root = os.environ.get("DEEPNET_DATA")
    if not root:
        return None
    path = Path(root)
    ok = (path / "train_catvnoncat.h5").is_file() and (path / "test_catvnoncat.h5").is_file()
    return path if ok else None


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The folder holding the course's cat data, or a visible skip."""
    path = _data_dir()
    if path is None:
        pytest.skip(
            "real cat data not found: set DEEPNET_DATA to a folder holding "
            "train_catvnoncat.h5 and test_catvnoncat.h5"
        )
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """For subprocess tests: a user without the course data or a device set, own cache."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path_factory.mktemp("cache")))
    for name in ("DEEPNET_DATA", "DEEPNET_DEVICE", "DEEPNET_BACKEND"):
        env.pop(name, None)
    return env


@pytest.fixture
def fused_cuda_calls(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Stand in for the fused CUDA step (plain gradient descent, ReLU) on any machine: it
    accepts every array, runs the generic step, and records each call's learning rate in
    the list returned, so a test sees which runs the engine sent to it."""
    from deepnet.cuda import dispatch
    from deepnet.optim import GradientDescent
    from deepnet.step import optimizer_step

    taken: list[float] = []

    def fake_cuda(parameters, X, Y, lr):
        taken.append(lr)
        params, cost, _ = optimizer_step(parameters, X, Y, GradientDescent(lr), {}, 0)
        return params, cost

    monkeypatch.setattr(dispatch, "accepts", lambda *a: True)
    monkeypatch.setattr(dispatch, "cuda_train_step", fake_cuda)
    return taken
