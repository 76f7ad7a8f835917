"""One training step, and predict, of the course's two models: deepnet beside its peers.

Each group is one model at one batch size and dtype; its rows are deepnet on each
device, the course's own formulation (float64 groups only: it is float64 NumPy by
definition) and PyTorch on each device. Every implementation starts from the same
parameters and data.

``deepnet_gram`` rows time one steady-state iteration of the full-batch Gram path
(:mod:`deepnet.fastpath`, what ``fit`` runs by default at full batch): the one-off
``K = X.T @ X`` is timed apart, in the ``gram setup`` groups, and whole runs are in
test_bench_fit.py.
"""

from __future__ import annotations

import pytest

import deepnet
from conftest import (
    BATCHES,
    DEVICES,
    DTYPES,
    LEARNING_RATE,
    MODELS,
    device_data,
    host_data,
    measure,
    need_device,
    need_torch,
)
from deepnet.bench.peers import TorchStep, course_predict, course_step
from deepnet.fastpath import GramFirstLayer, GramSteps
from deepnet.initialization import draw_parameters
from deepnet.training import like, train_step

IMPLEMENTATIONS = [
    "deepnet-cpu",
    pytest.param("deepnet-cuda", marks=pytest.mark.cuda),
    "deepnet_gram-cpu",
    pytest.param("deepnet_gram-cuda", marks=pytest.mark.cuda),
    "course-cpu",
    "torch-cpu",
    pytest.param("torch-cuda", marks=pytest.mark.cuda),
]
PREDICTORS = [impl for impl in IMPLEMENTATIONS if "gram" not in str(impl)]


def _parameters(model: str) -> dict:
    return draw_parameters(MODELS[model], "lecun", seed=1)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", BATCHES)
@pytest.mark.parametrize("model", list(MODELS))
def test_train_step(benchmark, model: str, m: int, dtype: str, impl: str) -> None:
    """Forward, cost, backward and update: one full-batch gradient-descent step."""
    who, device = impl.split("-")
    benchmark.group = f"train_step {model} m={m} {dtype}"
    if who == "course":
        if dtype != "float64":
            pytest.skip("the course's formulation is float64 only (see the float64 group)")
        X, Y = host_data(m)
        params = _parameters(model)
        fn = lambda: course_step(params, X, Y, LEARNING_RATE)  # noqa: E731
    elif who == "torch":
        need_torch(device)
        X, Y = host_data(m)
        fn = TorchStep(_parameters(model), X, Y, LEARNING_RATE, device=device, dtype=dtype)
        measure(benchmark, fn, examples=m, device=device, sync=fn.synchronize, dtype=dtype)
        return
    elif who == "deepnet_gram":
        need_device(device)
        X, Y = device_data(m, device, dtype)
        steps = GramSteps(like(_parameters(model), X), X, Y, LEARNING_RATE)
        fn = lambda: steps.run(0)  # noqa: E731  (one iteration; the state moves on, as in fit)
    else:
        need_device(device)
        X, Y = device_data(m, device, dtype)
        params = like(_parameters(model), X)
        fn = lambda: train_step(params, X, Y, LEARNING_RATE)  # noqa: E731
    measure(benchmark, fn, examples=m, device=device, dtype=dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", BATCHES)
def test_gram_setup(benchmark, m: int, dtype: str, device: str) -> None:
    """The Gram path's one-off cost: K = X.T @ X and P = W1 @ X (4-layer model)."""
    need_device(device)
    X, _ = device_data(m, device, dtype)
    W1 = like(_parameters("4-layer"), X)["W1"]
    benchmark.group = f"gram setup m={m} {dtype}"
    measure(
        benchmark, lambda: GramFirstLayer(W1, X, LEARNING_RATE), examples=m, device=device,
        dtype=dtype,
    )  # fmt: skip


@pytest.mark.parametrize("impl", PREDICTORS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", BATCHES)
@pytest.mark.parametrize("model", list(MODELS))
def test_predict(benchmark, model: str, m: int, dtype: str, impl: str) -> None:
    """0/1 predictions for m examples."""
    who, device = impl.split("-")
    benchmark.group = f"predict {model} m={m} {dtype}"
    if who == "course":
        if dtype != "float64":
            pytest.skip("the course's formulation is float64 only (see the float64 group)")
        X, _ = host_data(m)
        params = _parameters(model)
        fn = lambda: course_predict(X, params)  # noqa: E731
    elif who == "torch":
        need_torch(device)
        X, Y = host_data(m)
        step = TorchStep(_parameters(model), X, Y, LEARNING_RATE, device=device, dtype=dtype)
        measure(
            benchmark, step.predict, examples=m, device=device, sync=step.synchronize, dtype=dtype
        )
        return
    else:
        need_device(device)
        X, _ = device_data(m, device, dtype)
        params = like(_parameters(model), X)
        fn = lambda: deepnet.predict(X, None, params)  # noqa: E731
    measure(benchmark, fn, examples=m, device=device, dtype=dtype)
