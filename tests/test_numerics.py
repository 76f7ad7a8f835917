"""Numerical edges: saturated outputs, huge logits, no floating-point warnings."""

from __future__ import annotations

import numpy as np
import pytest

import deepnet
from deepnet.training import train_step

DTYPES = ["float32", "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_cost_is_finite_when_the_output_saturates(dtype):
    Y = np.array([[1, 0, 1, 0]], dtype=dtype)
    AL = np.array([[1.0, 0.0, 0.0, 1.0]], dtype=dtype)  # two right, two maximally wrong
    with np.errstate(all="raise"):
        cost = deepnet.compute_cost(AL, Y)
    assert np.isfinite(cost) and cost.dtype == np.dtype(dtype)
    # the two right answers cost nothing; each wrong one costs -log(smallest normal)
    expected = 2 * -np.log(np.finfo(dtype).smallest_normal) / 4
    assert float(cost) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cost_of_a_perfect_prediction_is_zero(dtype):
    Y = np.array([[1, 0]], dtype=dtype)
    with np.errstate(all="raise"):
        assert float(deepnet.compute_cost(Y.copy(), Y)) == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_has_no_overflow_for_huge_inputs(dtype):
    Z = np.array([[-1e30, -1000.0, -50.0, 0.0, 50.0, 1000.0, 1e30]], dtype=dtype)
    with np.errstate(all="raise"):
        A, _ = deepnet.sigmoid(Z)
        dZ = deepnet.sigmoid_backward(np.ones_like(Z), Z)
    assert A.dtype == np.dtype(dtype) and np.all(np.isfinite(A)) and np.all(np.isfinite(dZ))
    assert A[0, 0] < 1e-30 and A[0, 3] == 0.5 and A[0, -1] == 1.0
    assert np.all(np.diff(A[0]) >= 0)


def test_sigmoid_matches_the_course_formula_where_it_is_safe():
    Z = np.linspace(-30, 30, 601).reshape(1, -1)
    A, _ = deepnet.sigmoid(Z)
    np.testing.assert_allclose(A, 1 / (1 + np.exp(-Z)), rtol=1e-15, atol=0)
    pos = Z >= 0
    np.testing.assert_array_equal(A[pos], (1 / (1 + np.exp(-Z)))[pos])  # bit for bit


@pytest.mark.parametrize("dtype", DTYPES)
def test_L_model_backward_never_divides_by_zero(dtype):
    rng = np.random.RandomState(0)
    AL = np.array([[1.0, 0.0, 0.5]], dtype=dtype)
    Y = np.array([[0, 1, 1]], dtype=dtype)
    cache = ((rng.randn(2, 3).astype(dtype), rng.randn(1, 2).astype(dtype),
              np.zeros((1, 1), dtype)), np.array([[40.0, -40.0, 0.0]], dtype))  # fmt: skip
    with np.errstate(all="raise"):
        grads = deepnet.L_model_backward(AL, Y, [cache])
    assert all(np.all(np.isfinite(g)) for g in grads.values())


@pytest.mark.parametrize("dtype", DTYPES)
def test_train_step_is_finite_on_saturated_logits(dtype):
    params = {"W1": np.array([[1e4, -1e4]], dtype), "b1": np.zeros((1, 1), dtype)}
    X = np.array([[1.0, 0.0], [0.0, 1.0]], dtype)
    Y = np.array([[0.0, 1.0]], dtype)  # both maximally wrong: logits +1e4 and -1e4
    new, cost = train_step(params, X, Y, 0.1)
    assert np.isfinite(cost) and float(cost) == pytest.approx(1e4, rel=1e-6)
    # dZ = AL - Y = [1, -1] / m: the gradient is the right one, not NaN or zero
    np.testing.assert_allclose(new["W1"], params["W1"] - 0.1 * np.array([[0.5, -0.5]]), rtol=1e-6)
