"""Every unit row of reference-cases.md, on every grid entry, to the printed digits.

Inputs are drawn exactly as the table says (legacy NumPy generator, in draw order), then
handed to the kernels as arrays of the backend under test. In float32 the tolerance is
float32's (conftest.TOLERANCES); in float64 it is the printed 8 decimals.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

import deepnet
import deepnet.data
from conftest import GRID64

TOL = dict(rtol=0, atol=5e-9)  # the seed prints 8 decimals (grid tests: backend.tol)
RTOL = {"float64": 1e-15, "float32": 1e-6}  # a value known to all its digits
LAYERS = [12288, 20, 7, 5, 1]  # the application notebook's L-layer model


def draws(seed, *shapes):
    """np.random.seed(seed); then np.random.randn(*shape) for each shape, in order."""
    rng = np.random.RandomState(seed)
    return [rng.randn(*s) for s in shapes]


def test_initialize_parameters():
    p = deepnet.initialize_parameters(3, 2, 1)
    np.testing.assert_allclose(
        p["W1"],
        [[0.01624345, -0.00611756, -0.00528172], [-0.01072969, 0.00865408, -0.02301539]],
        **TOL,
    )
    np.testing.assert_allclose(p["W2"], [[0.01744812, -0.00761207]], **TOL)
    assert p["b1"].shape == (2, 1) and not p["b1"].any()
    assert p["b2"].shape == (1, 1) and not p["b2"].any()


def test_initialize_parameters_deep_step_by_step():
    p = deepnet.initialize_parameters_deep([5, 4, 3])
    np.testing.assert_allclose(
        p["W1"],
        [
            [0.01788628, 0.0043651, 0.00096497, -0.01863493, -0.00277388],
            [-0.00354759, -0.00082741, -0.00627001, -0.00043818, -0.00477218],
            [-0.01313865, 0.00884622, 0.00881318, 0.01709573, 0.00050034],
            [-0.00404677, -0.0054536, -0.01546477, 0.00982367, -0.01101068],
        ],
        **TOL,
    )
    np.testing.assert_allclose(
        p["W2"],
        [
            [-0.01185047, -0.0020565, 0.01486148, 0.00236716],
            [-0.01023785, -0.00712993, 0.00625245, -0.00160513],
            [-0.00768836, -0.00230031, 0.00745056, 0.01976111],
        ],
        **TOL,
    )
    assert p["b1"].shape == (4, 1) and p["b2"].shape == (3, 1)
    assert not p["b1"].any() and not p["b2"].any()


def test_initialize_parameters_deep_lecun_scaling():
    p = deepnet.initialize_parameters_deep([5, 4, 3], seed=1, init="lecun")
    W1, W2 = draws(1, (4, 5), (3, 4))
    np.testing.assert_array_equal(p["W1"], W1 / np.sqrt(5))
    np.testing.assert_array_equal(p["W2"], W2 / np.sqrt(4))


def test_linear_forward(backend, host):
    A, W, b = (backend.asarray(a) for a in draws(1, (3, 2), (1, 3), (1, 1)))
    Z, cache = deepnet.linear_forward(A, W, b)
    assert backend.is_own(Z)
    np.testing.assert_allclose(host(Z), [[3.26295337, -1.23429987]], **backend.tol)
    assert cache[0] is A and cache[1] is W and cache[2] is b


@pytest.mark.parametrize(
    ("activation", "expected"),
    [("sigmoid", [[0.96890023, 0.11013289]]), ("relu", [[3.43896131, 0.0]])],
)
def test_linear_activation_forward(backend, host, activation, expected):
    A_prev, W, b = (backend.asarray(a) for a in draws(2, (3, 2), (1, 3), (1, 1)))
    A, (linear_cache, Z) = deepnet.linear_activation_forward(A_prev, W, b, activation)
    assert backend.is_own(A)
    np.testing.assert_allclose(host(A), expected, **backend.tol)
    np.testing.assert_allclose(host(Z), host(W) @ host(A_prev) + host(b), rtol=RTOL[backend.dtype])
    assert linear_cache[0] is A_prev


def test_L_model_forward(backend, host):
    X, W1, b1, W2, b2, W3, b3 = draws(6, (5, 4), (4, 5), (4, 1), (3, 4), (3, 1), (1, 3), (1, 1))
    params = {
        k: backend.asarray(v) for k, v in dict(W1=W1, b1=b1, W2=W2, b2=b2, W3=W3, b3=b3).items()
    }
    AL, caches = deepnet.L_model_forward(backend.asarray(X), params)
    assert backend.is_own(AL)
    np.testing.assert_allclose(
        host(AL), [[0.03921668, 0.70498921, 0.19734387, 0.04728177]], **backend.tol
    )
    assert len(caches) == 3


def test_compute_cost(backend, host):
    Y = backend.asarray([[1, 1, 1]])
    AL = backend.asarray([[0.8, 0.9, 0.4]])
    cost = deepnet.compute_cost(AL, Y)
    assert backend.is_own(cost) and cost.shape == ()
    assert cost.dtype == backend.asarray(0.0).dtype
    np.testing.assert_allclose(float(cost), 0.41493159961539694, rtol=RTOL[backend.dtype])


def test_linear_backward(backend, host):
    dZ, A_prev, W, b = (backend.asarray(a) for a in draws(1, (1, 2), (3, 2), (1, 3), (1, 1)))
    dA_prev, dW, db = deepnet.linear_backward(dZ, (A_prev, W, b))
    assert all(backend.is_own(g) for g in (dA_prev, dW, db))
    np.testing.assert_allclose(
        host(dA_prev),
        [[0.51822968, -0.19517421], [-0.40506361, 0.15255393], [2.37496825, -0.89445391]],
        **backend.tol,
    )
    np.testing.assert_allclose(host(dW), [[-0.10076895, 1.40685096, 1.64992505]], **backend.tol)
    np.testing.assert_allclose(host(db), [[0.50629448]], **backend.tol)


LINEAR_ACTIVATION_BACKWARD = {
    "sigmoid": (
        [[0.11017994, 0.01105339], [0.09466817, 0.00949723], [-0.05743092, -0.00576154]],
        [[0.10266786, 0.09778551, -0.01968084]],
        [[-0.05729622]],
    ),
    "relu": (
        [[0.44090989, 0.0], [0.37883606, 0.0], [-0.2298228, 0.0]],
        [[0.44513824, 0.37371418, -0.10478989]],
        [[-0.20837892]],
    ),
}


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_linear_activation_backward(backend, host, activation):
    dA, A_prev, W, b, Z = (
        backend.asarray(a) for a in draws(2, (1, 2), (3, 2), (1, 3), (1, 1), (1, 2))
    )
    got = deepnet.linear_activation_backward(dA, ((A_prev, W, b), Z), activation)
    for g, want in zip(got, LINEAR_ACTIVATION_BACKWARD[activation], strict=True):
        assert backend.is_own(g)
        np.testing.assert_allclose(host(g), want, **backend.tol)


def test_L_model_backward(backend, host):
    AL, A1, W1, b1, Z1, A2, W2, b2, Z2 = draws(
        3, (1, 2), (4, 2), (3, 4), (3, 1), (3, 2), (3, 2), (1, 3), (1, 1), (1, 2)
    )
    a = backend.asarray
    caches = [((a(A1), a(W1), a(b1)), a(Z1)), ((a(A2), a(W2), a(b2)), a(Z2))]
    grads = deepnet.L_model_backward(a(AL), a([[1, 0]]), caches)
    assert set(grads) == {"dA0", "dA1", "dW1", "dW2", "db1", "db2"}
    assert all(backend.is_own(g) for g in grads.values())
    np.testing.assert_allclose(
        host(grads["dW1"]),
        [
            [0.41010002, 0.07807203, 0.13798444, 0.10502167],
            [0, 0, 0, 0],
            [0.05283652, 0.01005865, 0.01777766, 0.0135308],
        ],
        **backend.tol,
    )
    np.testing.assert_allclose(
        host(grads["db1"]), [[-0.22007063], [0], [-0.02835349]], **backend.tol
    )
    np.testing.assert_allclose(
        host(grads["dA1"]),
        [[0.12913162, -0.44014127], [-0.14175655, 0.48317296], [0.01663708, -0.05670698]],
        **backend.tol,
    )


def test_update_parameters(backend, host):
    W1, b1, W2, b2 = draws(2, (3, 4), (3, 1), (1, 3), (1, 1))
    dW1, db1, dW2, db2 = draws(3, (3, 4), (3, 1), (1, 3), (1, 1))
    a = backend.asarray
    params = dict(W1=a(W1), b1=a(b1), W2=a(W2), b2=a(b2))
    grads = dict(dW1=a(dW1), db1=a(db1), dW2=a(dW2), db2=a(db2))
    new = deepnet.update_parameters(params, grads, 0.1)
    assert all(backend.is_own(v) for v in new.values())
    np.testing.assert_allclose(
        host(new["W1"]),
        [
            [-0.59562069, -0.09991781, -2.14584584, 1.82662008],
            [-1.76569676, -0.80627147, 0.51115557, -1.18258802],
            [-1.0535704, -0.86128581, 0.68284052, 2.20374577],
        ],
        **backend.tol,
    )
    np.testing.assert_allclose(
        host(new["b1"]), [[-0.04659241], [-1.28888275], [0.53405496]], **backend.tol
    )
    np.testing.assert_allclose(
        host(new["W2"]), [[-0.55569196, 0.0354055, 1.32964895]], **backend.tol
    )
    np.testing.assert_allclose(host(new["b2"]), [[-0.84610769]], **backend.tol)
    np.testing.assert_array_equal(host(params["W1"]), host(a(W1)))  # the input is left alone


ITERATIONS = 200  # the table's 2500 take ~15 s on eager JAX; 200 show the same agreement


@cache
def numpy_run(data_dir: str) -> tuple[list[float], float, float]:
    """The L-layer model on NumPy: costs every 50 iterations, train and test accuracy."""
    d = deepnet.data.load_cat_data(data_dir)
    params, costs = deepnet.L_layer_model(
        d.train_x, d.train_y, LAYERS, num_iterations=ITERATIONS, record_every=50
    )
    splits = ((d.train_x, d.train_y), (d.test_x, d.test_y))
    acc = [deepnet.accuracy(deepnet.predict(x, y, params), y) for x, y in splits]
    return costs, *acc


@pytest.mark.slow
@pytest.mark.parametrize("backend", GRID64, indirect=True)
def test_training_on_the_real_data_matches_numpy(backend, real_data_dir):
    """Tensors in, tensors out: the course's L-layer run on the backend, against NumPy's."""
    d = deepnet.data.load_cat_data(real_data_dir)
    X, Y = backend.asarray(d.train_x), backend.asarray(d.train_y)
    params, costs = deepnet.L_layer_model(X, Y, LAYERS, num_iterations=ITERATIONS, record_every=50)
    assert all(backend.is_own(p) and p.dtype == X.dtype for p in params.values())
    want_costs, want_train, want_test = numpy_run(str(real_data_dir))
    np.testing.assert_allclose(costs, want_costs, rtol=1e-9, atol=0)
    tx, ty = backend.asarray(d.test_x), backend.asarray(d.test_y)
    assert deepnet.accuracy(deepnet.predict(X, Y, params), Y) == want_train
    assert deepnet.accuracy(deepnet.predict(tx, ty, params), ty) == want_test
