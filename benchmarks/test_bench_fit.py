"""Whole training runs, as users time them: the 4-layer model on the course's 209 pictures.

``L_layer_model`` (defaults: full batch, the Gram path where it pays), the same with
``gram=False`` (one ``train_step`` per iteration), the course's own loop, and PyTorch,
each for ``--e2e-iterations`` iterations (200 by default; docs/benchmarks.md uses the
course's 2500), the cost read every 100. Uses the real data when $DEEPNET_DATA points at
it, else synthetic data of the same shape (``extra_info["data"]`` says which). Each row
also records the peak memory a short run of the same kind allocates, relative to X in the
working dtype (``extra_info["peak_over_X"]``, tracemalloc; it cannot see PyTorch's).
"""

from __future__ import annotations

import tracemalloc

import pytest

from conftest import LEARNING_RATE, MODELS, host_data, measure, need_device, need_torch, real_data
from deepnet.backend import to_device, to_numpy
from deepnet.bench.peers import TorchStep, course_fit
from deepnet.initialization import draw_parameters
from deepnet.training import L_layer_model

DIMS = MODELS["4-layer"]
IMPLEMENTATIONS = [
    "deepnet-cpu",
    "deepnet_direct-cpu",
    pytest.param("deepnet-cuda", marks=pytest.mark.cuda),
    "course-cpu",
    "torch-cpu",
    pytest.param("torch-cuda", marks=pytest.mark.cuda),
]


def _data():
    found = real_data()
    return ("real", *found) if found is not None else ("synthetic", *host_data(209))


def _torch_fit(X, Y, dtype: str, device: str, iterations: int) -> list[float]:
    step = TorchStep(draw_parameters(DIMS, "lecun", 1), X, Y, LEARNING_RATE, device=device,
                     dtype=dtype)  # fmt: skip
    costs = []
    for i in range(iterations):
        cost = step()
        if i % 100 == 0:
            costs.append(float(cost))
    step.synchronize()
    return costs


def _peak_over_x(run, X_bytes: int) -> float:
    """Peak bytes tracemalloc sees allocated during ``run()``, over the size of X."""
    tracemalloc.start()
    try:
        run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / X_bytes


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fit_4layer(benchmark, request, dtype: str, impl: str) -> None:
    """The course's 4-layer run, end to end (data placement and initialisation included)."""
    iterations = request.config.getoption("--e2e-iterations")
    who, device = impl.split("-")
    source, X64, Y64 = _data()
    m = X64.shape[1]
    benchmark.group = f"fit 4-layer {iterations} iterations m={m} {dtype}"
    info = dict(dtype=dtype, data=source, iterations=iterations)
    if who == "course":
        if dtype != "float64":
            pytest.skip("the course's formulation is float64 only (see the float64 group)")
        params = draw_parameters(DIMS, "lecun", 1)

        def run(n=iterations):
            return course_fit(params, X64, Y64, LEARNING_RATE, n)

        info["peak_over_X"] = _peak_over_x(lambda: run(3), X64.nbytes)
    elif who == "torch":
        need_torch(device)

        def run(n=iterations):
            return _torch_fit(X64, Y64, dtype, device, n)
    else:
        need_device(device)
        gram = None if who == "deepnet" else False
        # The caller's data, already in the working dtype: what training adds is measured.
        X, Y = to_numpy(to_device(X64, "cpu", dtype)), to_numpy(to_device(Y64, "cpu", dtype))

        def run(n=iterations, gram=gram):
            return L_layer_model(X, Y, DIMS, LEARNING_RATE, n, device=device, dtype=dtype,
                                 gram=gram)  # fmt: skip

        if device == "cpu":
            # A short run of the same path (gram=None would skip the Gram path for 3 steps).
            info["peak_over_X"] = _peak_over_x(lambda: run(3, gram is None), X.nbytes)
    info["examples_per_iteration"] = m
    measure(benchmark, run, examples=m * iterations, device=device, rounds=1, **info)
