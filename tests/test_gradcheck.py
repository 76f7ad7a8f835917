"""L_model_backward (and the training step's fused gradients) against finite differences."""

from __future__ import annotations

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
