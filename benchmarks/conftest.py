"""Shared pieces of the benchmark suites: devices, data, and a timing helper.

Run them with the README's command (``python -m pytest benchmarks --benchmark-only ...``).
The 8192-example cases are skipped, visibly, unless ``--big`` is given; ``-m big`` then
selects only them. GPU cases are skipped, visibly, without CuPy and a GPU.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deepnet.backend import cuda_available, synchronize, to_device
from deepnet.bench.peers import torch_available, torch_cuda_available
from deepnet.threads import blas_info

N_X = 12288
MODELS = {"4-layer": (N_X, 20, 7, 5, 1), "2-layer": (N_X, 7, 1)}
BIG = 8192
BATCHES = [209, 1024, pytest.param(BIG, marks=pytest.mark.big, id=str(BIG))]
DTYPES = ["float64", "float32"]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
LEARNING_RATE = 0.0075
# Seconds of timed calls each case aims for (after warm-up); at least MIN_ROUNDS rounds.
BUDGET_S = 0.4
MIN_ROUNDS, MAX_ROUNDS = 3, 50
WARMUP_S = 0.2


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--big",
        action="store_true",
        help="also run the 8192-example cases (several GiB of memory, minutes on 2 cores)",
    )
    parser.addoption(
        "--e2e-iterations",
        type=int,
        default=200,
        help="iterations of the end-to-end training runs (default 200; the course runs 2500)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "big: the 8192-example cases (run with --big)")
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU with CuPy")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--big"):
        return
    skip = pytest.mark.skip(reason=f"m={BIG} case: pass --big to run it")
    for item in items:
        if "big" in item.keywords:
            item.add_marker(skip)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Put NumPy's BLAS (library, version, threads) and the thread policy in the JSON."""
    machine_info["blas"] = blas_info()
    machine_info["thread_settings"] = {
        name: os.environ.get(name)
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    }
    machine_info["loadavg"] = os.getloadavg()


def need_device(device: str) -> None:
    """Skip, visibly, a case whose device is not usable here."""
    if device == "cuda" and not cuda_available():
        pytest.skip("cuda: needs CuPy and a CUDA GPU (none usable here)")


def need_torch(device: str) -> None:
    """Skip, visibly, a PyTorch case without PyTorch (or without its CUDA build)."""
    if not torch_available():
        pytest.skip("PyTorch is not installed (pip install torch) - peer not measured")
    if device == "cuda" and not torch_cuda_available():
        pytest.skip("PyTorch sees no CUDA GPU here")


@functools.lru_cache(maxsize=2)
def host_data(m: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic float64 pictures and labels shaped like the course's: X is (12288, m).

    X is column-major (each example contiguous), which is what the course's
    ``x.reshape(m, -1).T / 255`` produces; the layout benchmark measures the other one.
    """
    rng = np.random.default_rng(m)
    X = rng.integers(0, 256, size=(m, N_X)).T / 255.0
    Y = (rng.random((1, m)) < 0.35).astype(np.float64)
    return X, Y


@functools.lru_cache(maxsize=3)
def device_data(m: int, device: str, dtype: str) -> tuple[Any, Any]:
    """host_data(m) on a device, in a dtype (the layout is kept)."""
    X, Y = host_data(m)
    return to_device(X, device, dtype), to_device(Y, device, dtype)


def real_data() -> tuple[np.ndarray, np.ndarray] | None:
    """The course's training set as (X, Y) float64, or None without $DEEPNET_DATA."""
    root = os.environ.get("DEEPNET_DATA")
    path = Path(root or ".") / "train_catvnoncat.h5"
    if not root or not path.is_file():
        return None
    import h5py

    with h5py.File(path, "r") as f:
        x = np.asarray(f["train_set_x"])
        y = np.asarray(f["train_set_y"])
    return x.reshape(x.shape[0], -1).T / 255.0, y.reshape(1, -1).astype(np.float64)


def timed_rounds(call: Callable[[], Any], budget_s: float = BUDGET_S) -> int:
    """Warm ``call`` up and size the rounds to ``budget_s``.

    Warm-up runs at least twice and for at least WARMUP_S: BLAS thread pools, caches and
    GPU kernels get started, and the worker threads of the previous case (OpenBLAS's and
    PyTorch's OpenMP pools spin for a while after their last call) have gone quiet.
    """
    began, calls = time.perf_counter(), 0
    while calls < 2 or time.perf_counter() - began < WARMUP_S:
        start = time.perf_counter()
        call()
        once = time.perf_counter() - start
        calls += 1
    return max(MIN_ROUNDS, min(MAX_ROUNDS, math.ceil(budget_s / max(once, 1e-9))))


def measure(
    benchmark: Any,
    fn: Callable[[], Any],
    *,
    examples: int,
    device: str = "cpu",
    sync: Callable[[], None] | None = None,
    rounds: int | None = None,
    **info: Any,
) -> None:
    """Benchmark ``fn`` after a warm-up, waiting for the GPU inside the timed call.

    Records throughput in ``extra_info``: ``examples_per_s`` from the median round and
    ``examples_per_s_best`` from the fastest.
    """
    if sync is None and device == "cuda":

        def sync() -> None:
            synchronize("cuda")

    def call() -> Any:
        out = fn()
        if sync is not None:
            sync()
        return out

    n = rounds if rounds is not None else timed_rounds(call)
    benchmark.extra_info.update(info, examples=examples, device=device)
    benchmark.extra_info.setdefault("blas_threads", blas_info()["threads"])
    benchmark.pedantic(call, rounds=n, iterations=1, warmup_rounds=0)
    stats = benchmark.stats.stats
    benchmark.extra_info["examples_per_s"] = examples / stats.median
    benchmark.extra_info["examples_per_s_best"] = examples / stats.min
