"""L_model_backward (and the training step's fused gradients) against finite differences.

The finite differences are taken once, on the host in float64; every grid entry's analytic
gradients are held to them (float32 to float32's precision).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

import deepnet
from deepnet.training import train_step

# (layer dims, batch size m): depths 1..4 weight layers, widths 1..6, m = 1 included.
CASES = [
    ([3, 1], 1),
    ([4, 3, 1], 1),
    ([5, 4, 1], 7),
    ([2, 6, 3, 1], 5),
    ([6, 2, 5, 3, 1], 4),
    ([3, 1, 1], 9),
]
# On the grid: one three-layer case (eager JAX compiles anew for every shape: ~5 s here).
GRID_CASES = [CASES[3]]
GRID_TOL = {"float64": 1e-6, "float32": 1e-3}


def problem(dims, m, seed):
    rng = np.random.RandomState(seed)
    params = {}
    for layer in range(1, len(dims)):
        params[f"W{layer}"] = rng.randn(dims[layer], dims[layer - 1])
        params[f"b{layer}"] = rng.randn(dims[layer], 1) * 0.1
    X = rng.randn(dims[0], m)
    Y = (rng.rand(1, m) > 0.5).astype(float)
    return params, X, Y


def cost_of(params, X, Y):
    AL, _ = deepnet.L_model_forward(X, params)
    return float(deepnet.compute_cost(AL, Y))


def numeric_grad(f, x, eps=1e-6):
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f()
        x[i] = old - eps
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


def assert_close(analytic, numeric):
    scale = np.maximum(1.0, np.abs(numeric))
    np.testing.assert_array_less(np.abs(analytic - numeric) / scale, 1e-6)


@pytest.mark.parametrize(("dims", "m"), CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_L_model_backward_matches_finite_differences(dims, m, seed):
    params, X, Y = problem(dims, m, seed)
    AL, caches = deepnet.L_model_forward(X, params)
    grads = deepnet.L_model_backward(AL, Y, caches)
    for key, value in params.items():
        numeric = numeric_grad(lambda: cost_of(params, X, Y), value)
        assert_close(grads[f"d{key}"], numeric)
    # dA0 is the gradient of the cost times m (the course's dA carries no 1/m)
    numeric_dx = numeric_grad(lambda: cost_of(params, X, Y), X)
    assert_close(grads["dA0"] / m, numeric_dx)


@pytest.mark.parametrize(("dims", "m"), CASES)
def test_train_step_applies_the_same_gradients(dims, m):
    params, X, Y = problem(dims, m, seed=5)
    AL, caches = deepnet.L_model_forward(X, params)
    grads = deepnet.L_model_backward(AL, Y, caches)
    lr = 0.5
    new, cost = train_step(params, X, Y, lr)
    assert abs(float(cost) - cost_of(params, X, Y)) < 1e-12
    for key, value in params.items():
        np.testing.assert_allclose((value - new[key]) / lr, grads[f"d{key}"], rtol=1e-9, atol=1e-12)


@cache
def host_gradients(dims: tuple[int, ...], m: int, seed: int) -> dict[str, np.ndarray]:
    """Central differences of the cost for every parameter, and for X (as dA0 / m)."""
    params, X, Y = problem(list(dims), m, seed)
    numeric = {f"d{k}": numeric_grad(lambda: cost_of(params, X, Y), v) for k, v in params.items()}
    numeric["dA0"] = numeric_grad(lambda: cost_of(params, X, Y), X) * m
    return numeric


@pytest.mark.parametrize(("dims", "m"), GRID_CASES)
def test_gradients_on_every_backend(backend, host, dims, m):
    params, X, Y = problem(dims, m, 0)
    on = {k: backend.asarray(v) for k, v in params.items()}
    AL, caches = deepnet.L_model_forward(backend.asarray(X), on)
    grads = deepnet.L_model_backward(AL, backend.asarray(Y), caches)
    numeric = host_gradients(tuple(dims), m, 0)
    for key, want in numeric.items():
        assert backend.is_own(grads[key]) and grads[key].dtype == AL.dtype
        got = host(grads[key]).astype(np.float64)
        scale = np.maximum(1.0, np.abs(want)) * (m if key == "dA0" else 1)
        np.testing.assert_array_less(np.abs(got - want) / scale, GRID_TOL[backend.dtype])
    lr = 0.5
    new, cost = train_step(on, backend.asarray(X), backend.asarray(Y), lr)
    assert abs(float(cost) - cost_of(params, X, Y)) < GRID_TOL[backend.dtype]
    for key, value in params.items():
        step = (value - host(new[key]).astype(np.float64)) / lr
        scale = np.maximum(1.0, np.abs(numeric[f"d{key}"]))
        np.testing.assert_array_less(
            np.abs(step - numeric[f"d{key}"]) / scale, GRID_TOL[backend.dtype]
        )
