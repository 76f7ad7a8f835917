"""What the input checks cost against the work they guard (issue 6: under 2% of a step).

The boundary checks (:mod:`deepnet.validation`) run once per training call, before the
first iteration: ``check_examples`` reads X once (dtype, shape, finiteness) and Y once
(labels in {0, 1}); ``check_parameters`` only looks at shapes. Inside the loop, each
``train_step`` asks ``deepnet.cuda.accepts`` whether to take the CUDA path: on NumPy arrays a
type test; on CuPy arrays it also checks the layout (shapes, dtypes, contiguity, one
device) of every step's inputs, from metadata only. ``train_step`` itself checks nothing.
Each benchmark records its time as a fraction of one course-sized step, (12288, 20, 7, 5, 1)
on 209 pictures in float64, measured here, in ``extra_info``; a once-per-call check also
as a fraction of a step spread over the course's 2500 iterations.

Run: python -m pytest benchmarks/test_bench_validation.py -o addopts="" --benchmark-only
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest

from deepnet.backend import cuda_available, synchronize, to_device
from deepnet.cuda import dispatch as cuda_step
from deepnet.initialization import draw_parameters
from deepnet.training import train_step
from deepnet.validation import check_examples, check_parameters

DIMS = [12288, 20, 7, 5, 1]
M = 209
ITERATIONS = 2500  # one course run: what a once-per-call check is spread over
GROUP = "validation overhead"

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA GPU"),
        ],
    ),
]


@pytest.fixture(scope="module", params=DEVICES)
def problem(request) -> tuple[str, dict, object, object]:
    """The course's L-layer run on ``device``, float64 (random pixels in [0, 1])."""
    device = request.param
    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, (DIMS[0], M)) / 255.0
    Y = (rng.rand(1, M) > 0.65).astype(np.float64)
    parameters = {k: to_device(v, device) for k, v in draw_parameters(DIMS, "lecun", 1).items()}
    return device, parameters, to_device(X, device), to_device(Y, device)


def step(device: str, parameters: dict, X, Y) -> None:
    """One train_step, finished (the GPU runs asynchronously)."""
    train_step(parameters, X, Y, 0.0075)
    synchronize(device)


@pytest.fixture(scope="module")
def step_seconds(problem) -> float:
    """The median time of one train_step, measured once for the ratios (after a warm-up)."""
    for _ in range(3):
        step(*problem)
    times = []
    for _ in range(15):
        start = time.perf_counter()
        step(*problem)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def record_ratio(benchmark, step_seconds: float, once_per_call: bool = False) -> None:
    benchmark.extra_info["train_step_s"] = step_seconds
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing measured
        return
    ratio = benchmark.stats.stats.median / step_seconds
    benchmark.extra_info["ratio_to_one_step"] = ratio
    if once_per_call:
        benchmark.extra_info[f"ratio_per_step_over_{ITERATIONS}_iterations"] = ratio / ITERATIONS


def test_train_step(benchmark, problem, step_seconds):
    benchmark.group = f"{GROUP} ({problem[0]})"
    benchmark(step, *problem)
    record_ratio(benchmark, step_seconds)


def test_boundary_checks_once_per_call(benchmark, problem, step_seconds):
    device, parameters, X, Y = problem
    benchmark.group = f"{GROUP} ({device})"

    def checks() -> None:
        check_examples(X, Y, check_parameters(parameters)[0])  # ends in a host read on a GPU

    benchmark(checks)
    record_ratio(benchmark, step_seconds, once_per_call=True)


def test_dispatch_check_in_every_step(benchmark, problem, step_seconds):
    device, parameters, X, Y = problem
    benchmark.group = f"{GROUP} ({device})"
    taken = benchmark(cuda_step.accepts, parameters, X, Y)
    assert taken is False or device == "cuda"  # NumPy arrays: the generic path, at once
    record_ratio(benchmark, step_seconds)
