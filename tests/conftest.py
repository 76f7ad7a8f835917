"""Shared fixtures: one backend grid (numpy, array-api-strict, cupy) and the real data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from deepnet.backend import cuda_available, to_numpy


@dataclass(frozen=True)
class Backend:
    """An array library the kernels must run on: how to make its arrays and read them back."""

    name: str
    xp: ModuleType

    def asarray(self, x: Any, dtype: str = "float64") -> Any:
        """A host array (or nested list) as this backend's array, in ``dtype``."""
        return self.xp.asarray(np.asarray(x, dtype=dtype), dtype=getattr(self.xp, dtype))

    def is_own(self, x: Any) -> bool:
        """True when ``x`` is an array of this backend."""
        return type(x).__module__.split(".")[0] == self.xp.__name__.split(".")[0]


def _load_backend(name: str) -> Backend:
    if name == "numpy":
        return Backend(name, np)
    if name == "array_api_strict":
        return Backend(name, pytest.importorskip("array_api_strict"))
    if not cuda_available():
        pytest.skip("cupy backend: needs CuPy and a CUDA GPU (none usable here)")
    import cupy  # noqa: PLC0415  (only reached with a GPU)

    return Backend(name, cupy)


BACKENDS = ["numpy", "array_api_strict", pytest.param("cupy", marks=pytest.mark.cuda)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each test using it runs once per backend; cupy shows as skipped without a GPU."""
    return _load_backend(request.param)


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
    env.pop("DEEPNET_DATA", None)
    env.pop("DEEPNET_DEVICE", None)
    return env
