"""Numerical edges: saturated outputs, huge logits, no floating-point warnings, on the grid."""

from __future__ import annotations

import numpy as np
import pytest

import deepnet
from deepnet.training import train_step


def test_cost_is_finite_when_the_output_saturates(backend, host):
    Y = backend.asarray([[1, 0, 1, 0]])
    AL = backend.asarray([[1.0, 0.0, 0.0, 1.0]])  # two right, two maximally wrong
    with np.errstate(all="raise"):
        cost = deepnet.compute_cost(AL, Y)
    assert backend.is_own(cost) and cost.dtype == AL.dtype and np.isfinite(float(cost))
    # the two right answers cost nothing; each wrong one costs -log(smallest normal)
    expected = 2 * -np.log(np.finfo(backend.dtype).smallest_normal) / 4
    assert float(cost) == pytest.approx(expected, rel=1e-6)


def test_cost_of_a_perfect_prediction_is_zero(backend):
    Y = backend.asarray([[1, 0]])
    with np.errstate(all="raise"):
        assert float(deepnet.compute_cost(backend.asarray([[1, 0]]), Y)) == 0.0


def test_sigmoid_has_no_overflow_for_huge_inputs(backend, host):
    Z = backend.asarray([[-1e30, -1000.0, -50.0, 0.0, 50.0, 1000.0, 1e30]])
    with np.errstate(all="raise"):
        A, _ = deepnet.sigmoid(Z)
        dZ = deepnet.sigmoid_backward(backend.xp.ones_like(Z), Z)
    assert backend.is_own(A) and A.dtype == Z.dtype and dZ.dtype == Z.dtype
    A, dZ = host(A), host(dZ)
    assert np.all(np.isfinite(A)) and np.all(np.isfinite(dZ))
    assert A[0, 0] < 1e-30 and A[0, 3] == 0.5 and A[0, -1] == 1.0
    assert np.all(np.diff(A[0]) >= 0)


def test_sigmoid_matches_the_course_formula_where_it_is_safe():
    Z = np.linspace(-30, 30, 601).reshape(1, -1)
    A, _ = deepnet.sigmoid(Z)
    np.testing.assert_allclose(A, 1 / (1 + np.exp(-Z)), rtol=1e-15, atol=0)
    pos = Z >= 0
    np.testing.assert_array_equal(A[pos], (1 / (1 + np.exp(-Z)))[pos])  # bit for bit


def test_L_model_backward_never_divides_by_zero(backend, host):
    rng = np.random.RandomState(0)
    a = backend.asarray
    AL, Y = a([[1.0, 0.0, 0.5]]), a([[0, 1, 1]])
    cache = ((a(rng.randn(2, 3)), a(rng.randn(1, 2)), a(np.zeros((1, 1)))), a([[40.0, -40.0, 0.0]]))
    with np.errstate(all="raise"):
        grads = deepnet.L_model_backward(AL, Y, [cache])
    assert all(backend.is_own(g) and np.all(np.isfinite(host(g))) for g in grads.values())


def test_train_step_is_finite_on_saturated_logits(backend, host):
    a = backend.asarray
    params = {"W1": a([[1e4, -1e4]]), "b1": a(np.zeros((1, 1)))}
    X = a([[1.0, 0.0], [0.0, 1.0]])
    Y = a([[0.0, 1.0]])  # both maximally wrong: logits +1e4 and -1e4
    new, cost = train_step(params, X, Y, 0.1)
    assert backend.is_own(cost) and float(cost) == pytest.approx(1e4, rel=1e-6)
    # dZ = AL - Y = [1, -1] / m: the gradient is the right one, not NaN or zero
    want = host(params["W1"]) - 0.1 * np.array([[0.5, -0.5]])
    np.testing.assert_allclose(host(new["W1"]), want, rtol=1e-6)
