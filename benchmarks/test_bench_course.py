"""Issue 15's figures: deepnet beside PyTorch on the same runs, the step against its floor,
and a busy machine.

- ``course <dtype> <batch> threads=<n>``: ``L_layer_model`` on the course's data (12288,
  20, 7, 5, 1), full batch and mini-batch 64, against the same run in PyTorch
  (``nn.Linear`` + ``BCEWithLogitsLoss`` + ``optim.SGD``, the same initial weights and the
  same batch order), with the BLAS (and PyTorch) held to 1 or 2 threads. Five rounds that
  alternate: PyTorch's run (the round's untimed setup, timed by hand) then deepnet's;
  ``extra_info`` holds both medians, their spreads and ``ratio`` (deepnet / PyTorch).
  ``L_layer_model`` takes its default paths (the Gram path at full batch, the mini-batch
  Gram source of ``deepnet.gram_batches`` at batch 64); the ``ordinary`` rows are
  ``L_layer_model(..., gram=False)``, the ordinary step.
- ``ordinary step m=1024 float32``: train_step and the blocked step against PyTorch's step
  (alternating) and the GEMM floor: the two products at the square-SGEMM rate measured in
  the same session (``floor_ms``, ``over_floor``).
- ``another process``: a 209-example step (what ``deepnet bench`` times) and a default
  2500-iteration run, quiet and then with a spin loop started by the benchmark on the
  machine; ``busy_over_quiet`` in ``extra_info``, under the thread policy
  (``deepnet.threads``) and under the BLAS's own thread count.

Runs in a few minutes at the default ``--e2e-iterations 200``; the course's runs are 2500.
"""

from __future__ import annotations

import contextlib
import functools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from conftest import LEARNING_RATE, MODELS, host_data, need_torch, real_data
from deepnet import threads
from deepnet.bench.peers import TorchStep
from deepnet.blocked_step import blocked_train_step
from deepnet.initialization import draw_parameters
from deepnet.step import input_gradient, input_product
from deepnet.training import L_layer_model, batch_order, like, train_step

DIMS = MODELS["4-layer"]
ROUNDS = 5


def course_data() -> tuple[str, np.ndarray, np.ndarray]:
    found = real_data()
    return ("real", *found) if found is not None else ("synthetic", *host_data(209))


@contextlib.contextmanager
def own_threads(n: int) -> Iterator[None]:
    """``DEEPNET_BLAS_THREADS=n`` for the body: deepnet's thread policy, once fit applies it,
    uses exactly ``n`` (instead of deciding from the machine's load)."""
    before = os.environ.get(threads.OWN_VAR)
    os.environ[threads.OWN_VAR] = str(n)
    try:
        yield
    finally:
        if before is None:
            del os.environ[threads.OWN_VAR]
        else:
            os.environ[threads.OWN_VAR] = before


@contextlib.contextmanager
def thread_limit(n: int) -> Iterator[None]:
    """Hold every BLAS and OpenMP pool (NumPy's and PyTorch's) to ``n`` threads."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        if torch is not None:
            torch.set_num_threads(n)
        with threadpool_limits(limits=n), own_threads(n):
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(before)


def seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def spread(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def torch_run(X: np.ndarray, Y: np.ndarray, dtype: str, batch: int | None, n: int) -> float:
    """PyTorch's run: the same batches as deepnet's (batch_order), cost read every 100."""
    import torch

    step = TorchStep(draw_parameters(DIMS, "lecun", 1), X, Y, LEARNING_RATE, dtype=dtype)
    m, last = X.shape[1], 0.0
    for i in range(n):
        batches = batch_order(m, batch, 1, i)
        if batches is None:
            cost = step()
        else:
            cost = 0.0
            for idx in batches:
                cols = torch.as_tensor(idx)
                step.optimizer.zero_grad(set_to_none=True)
                loss = step.loss(step.model(step.X[cols]), step.Y[cols])
                loss.backward()
                step.optimizer.step()
                cost = cost + loss.detach() * (len(idx) / m)
        if i % 100 == 0:
            last = float(cost)
    return last


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("impl", ["L_layer_model", "ordinary"])
@pytest.mark.parametrize("batch", [None, 64], ids=["full", "batch64"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_course_run_vs_torch(benchmark, request, dtype, batch, impl, n_threads) -> None:
    """A whole course run, deepnet and PyTorch alternating, at 1 or 2 threads."""
    need_torch("cpu")
    n = request.config.getoption("--e2e-iterations")
    source, X64, Y64 = course_data()
    X, Y = X64.astype(dtype), Y64.astype(dtype)
    benchmark.group = f"course {dtype} {'full' if batch is None else batch} threads={n_threads}"

    gram = None if impl == "L_layer_model" else False

    def deepnet_run(n: int = n) -> Any:
        return L_layer_model(X, Y, DIMS, LEARNING_RATE, n, dtype=dtype, batch_size=batch,
                             gram=gram)  # fmt: skip

    torch_times: list[float] = []
    with thread_limit(n_threads):
        deepnet_run(3), torch_run(X64, Y64, dtype, batch, 3)  # warm both up
        benchmark.extra_info.update(
            dtype=dtype, batch=batch or X.shape[1], data=source, iterations=n,
            blas_threads=threads.blas_info()["threads"], examples=X.shape[1] * n,
        )  # fmt: skip
        benchmark.pedantic(
            deepnet_run,
            setup=lambda: torch_times.append(seconds(lambda: torch_run(X64, Y64, dtype, batch, n))),
            rounds=ROUNDS,
            iterations=1,
        )
    mine = benchmark.stats.stats
    benchmark.extra_info.update(
        torch_s=spread(torch_times),
        deepnet_s={"median": mine.median, "min": mine.min, "max": mine.max},
        ratio=mine.median / statistics.median(torch_times),
        examples_per_s=X.shape[1] * n / mine.median,
    )


@functools.lru_cache(maxsize=2)
def gemm_rate(dtype: str, size: int = 2048, repeats: int = 5) -> float:
    """This machine's square GEMM rate (FLOP/s, the best of ``repeats``), now."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    a @ b
    best = min(seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best


@pytest.mark.parametrize("m", [209, 1024, pytest.param(8192, marks=pytest.mark.big)])
@pytest.mark.parametrize("impl", ["train_step", "blocked", "blocked64", "two_products"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_step_vs_torch_and_floor(benchmark, dtype, impl, m) -> None:
    """The ordinary step (no K) against PyTorch's step, alternating, and the GEMM floor.

    ``blocked``: the blocked step with its default block (half the last-level cache);
    ``blocked64``: blocks of 64 examples; ``two_products``: only ``W1 @ X`` and
    ``G1 @ X.T`` as train_step calls them, the part of the step the floor bounds.
    """
    need_torch("cpu")
    X64, Y64 = host_data(m)
    X, Y = X64.astype(dtype), Y64.astype(dtype)
    host = draw_parameters(DIMS, "lecun", 1)
    params = like(host, X)
    G1 = np.full((DIMS[1], m), 1e-3, dtype)
    step = {
        "train_step": train_step,
        "blocked": blocked_train_step,
        "blocked64": functools.partial(blocked_train_step, block=64),
        "two_products": lambda p, X, Y, lr: (input_product(p["W1"], X), input_gradient(lr * G1, X)),
    }[impl]
    torch_step = TorchStep(host, X64, Y64, LEARNING_RATE, dtype=dtype)
    benchmark.group = f"ordinary step m={m} {dtype}"
    n1, n_x = DIMS[1], DIMS[0]
    floor = 2 * (2 * n1 * n_x * m) / gemm_rate(dtype)
    torch_times: list[float] = []
    for _ in range(3):
        step(params, X, Y, LEARNING_RATE), torch_step()  # warm-up
    benchmark.pedantic(
        lambda: step(params, X, Y, LEARNING_RATE),
        setup=lambda: torch_times.append(seconds(torch_step)),
        rounds=max(ROUNDS, 15),
        iterations=1,
    )
    mine = benchmark.stats.stats
    benchmark.extra_info.update(
        dtype=dtype, examples=m, blas_threads=threads.blas_info()["threads"],
        torch_s=spread(torch_times), ratio=mine.median / statistics.median(torch_times),
        floor_ms=floor * 1e3, over_floor=mine.median / floor,
        gemm_gflops=gemm_rate(dtype) / 1e9, examples_per_s=m / mine.median,
    )  # fmt: skip


@contextlib.contextmanager
def spin_loop() -> Iterator[None]:
    """Another process keeping one core busy for as long as the body runs."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start and be scheduled
        yield
    finally:
        spinner.kill()
        spinner.wait()


@pytest.mark.parametrize("policy", ["deepnet", "blas_default"])
@pytest.mark.parametrize("workload", ["bench_step", "run_2500"])
def test_another_process(benchmark, workload, policy) -> None:
    """Quiet, then with a spin loop: the slowdown a user sees when the machine is shared.

    Run it without OMP/OPENBLAS/MKL_NUM_THREADS set: they turn the policy off.
    """
    source, X64, Y64 = course_data()
    if workload == "bench_step":
        params = like(draw_parameters(DIMS, "lecun", 1), X64)

        def work() -> Any:
            return train_step(params, X64, Y64, LEARNING_RATE)

        examples, rounds = X64.shape[1], 30
    else:

        def work() -> Any:
            return L_layer_model(X64, Y64, DIMS, LEARNING_RATE, 2500)

        examples, rounds = X64.shape[1] * 2500, ROUNDS

    def policy_threads() -> contextlib.AbstractContextManager:
        """The thread policy, decided once when the phase starts (as a run decides it); or
        the BLAS's own count, pinned so that a fit applying the policy keeps it too."""
        if policy == "deepnet":
            return threads.blas_threads()
        return own_threads(threads.blas_info()["threads"] or 1)

    with policy_threads():
        work()
        quiet = [seconds(work) for _ in range(rounds)]
    benchmark.group = f"another process {workload}"
    with spin_loop(), policy_threads():
        used = threads.blas_info(threads.ThreadPlan(None, ""))["threads"]
        benchmark.pedantic(work, rounds=rounds, iterations=1, warmup_rounds=1)
    busy = benchmark.stats.stats
    benchmark.extra_info.update(
        data=source, examples=examples, policy=policy, blas_threads_busy=used,
        quiet_s=spread(quiet), busy_over_quiet=busy.median / statistics.median(quiet),
        examples_per_s=examples / busy.median,
    )  # fmt: skip
