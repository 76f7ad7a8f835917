"""Issue 11's functional API: the second course's initialisations, L2, dropout, gradient
checking, mini-batches, momentum, Adam and learning-rate decay.

Each function runs on every backend and is compared with values the test computes itself,
in plain NumPy float64, from the course's formulas. A few course cases are checked against
the values the course's notebooks print.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepnet import (
    L_model_backward,
    L_model_backward_with_dropout,
    L_model_backward_with_regularization,
    L_model_forward,
    L_model_forward_with_dropout,
    compute_cost,
    compute_cost_with_regularization,
    dictionary_to_vector,
    gradient_check_n,
    gradients_to_vector,
    initialize_adam,
    initialize_parameters_he,
    initialize_parameters_random,
    initialize_parameters_zeros,
    initialize_velocity,
    random_mini_batches,
    schedule_lr_decay,
    update_lr,
    update_parameters_with_adam,
    update_parameters_with_momentum,
    vector_to_dictionary,
)
from deepnet.backend import to_numpy
from deepnet.course_updates import adam_update, l2_gradient, momentum_update
from deepnet.errors import InputError, ShapeError

DIMS = [4, 5, 3, 1]


def host_parameters(dims: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.RandomState(seed)
    params = {}
    for layer in range(1, len(dims)):
        params[f"W{layer}"] = rng.randn(dims[layer], dims[layer - 1]) * 0.8
        params[f"b{layer}"] = rng.randn(dims[layer], 1) * 0.1
    return params


def host_data(n_x: int, m: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    X = rng.randn(n_x, m)
    Y = (rng.rand(1, m) > 0.5).astype(np.float64)
    return X, Y


def on(backend, table: dict, dtype: str = "float64") -> dict:
    return {k: backend.asarray(v, dtype) for k, v in table.items()}


def to_host(table: dict) -> dict:
    return {k: to_numpy(v) for k, v in table.items()}


# --- a NumPy reference written from the formulas ---------------------------------------------


def ref_forward(X, P, masks=None, keep_prob=1.0):
    """Returns the activations A0 (= X), A1 (after dropout), ..., AL and the Zs."""
    L = len(P) // 2
    As, Zs = [X], []
    for layer in range(1, L + 1):
        Z = P[f"W{layer}"] @ As[-1] + P[f"b{layer}"]
        A = 1 / (1 + np.exp(-Z)) if layer == L else np.maximum(Z, 0)
        if masks is not None and layer < L:
            A = A * masks[layer - 1] / keep_prob
        Zs.append(Z)
        As.append(A)
    return As, Zs


def ref_backward(Y, P, As, Zs, masks=None, keep_prob=1.0, lambd=0.0):
    L = len(P) // 2
    m = Y.shape[1]
    grads = {}
    dZ = As[-1] - Y
    for layer in range(L, 0, -1):
        grads[f"dW{layer}"] = dZ @ As[layer - 1].T / m + lambd / m * P[f"W{layer}"]
        grads[f"db{layer}"] = dZ.sum(axis=1, keepdims=True) / m
        if layer > 1:
            dA = P[f"W{layer}"].T @ dZ
            if masks is not None:
                dA = dA * masks[layer - 2] / keep_prob
            dZ = dA * (Zs[layer - 2] > 0)
    return grads


def ref_cost(AL, Y, P, lambd):
    m = Y.shape[1]
    cross = -np.sum(Y * np.log(AL) + (1 - Y) * np.log(1 - AL)) / m
    squares = sum(np.sum(P[f"W{layer}"] ** 2) for layer in range(1, len(P) // 2 + 1))
    return cross + lambd / (2 * m) * squares


def close(actual, expected, rtol=1e-12, atol=1e-14):
    np.testing.assert_allclose(to_numpy(actual), expected, rtol=rtol, atol=atol)


# --- initialisation ------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [[3, 2, 1], [6, 5, 4, 3, 1]])
def test_zeros_random_and_he_are_the_course_draws(dims):
    rng = np.random.RandomState(3)  # the stream of np.random.seed(3); np.random.randn(...)
    random_w = [rng.randn(dims[k], dims[k - 1]) * 10 for k in range(1, len(dims))]
    rng = np.random.RandomState(3)
    he_w = [
        rng.randn(dims[k], dims[k - 1]) * np.sqrt(2.0 / dims[k - 1]) for k in range(1, len(dims))
    ]
    for init, weights in [
        (
            initialize_parameters_zeros,
            [np.zeros((dims[k], dims[k - 1])) for k in range(1, len(dims))],
        ),
        (initialize_parameters_random, random_w),
        (initialize_parameters_he, he_w),
    ]:
        params = init(dims)
        assert sorted(params) == sorted(f"{n}{k}" for k in range(1, len(dims)) for n in "Wb")
        for k in range(1, len(dims)):
            np.testing.assert_array_equal(params[f"W{k}"], weights[k - 1])
            np.testing.assert_array_equal(params[f"b{k}"], np.zeros((dims[k], 1)))


def test_inits_reproduce_the_course_printed_values():
    params = initialize_parameters_random([3, 2, 1])
    np.testing.assert_allclose(
        params["W1"],
        [[17.88628473, 4.36509851, 0.96497468], [-18.63492703, -2.77388203, -3.54758979]],
        atol=1e-8,
    )
    np.testing.assert_allclose(params["W2"], [[-0.82741481, -6.27000677]], atol=1e-8)
    params = initialize_parameters_he([2, 4, 1])
    np.testing.assert_allclose(
        params["W1"],
        [[1.78862847, 0.43650985], [0.09649747, -1.8634927], [-0.2773882, -0.35475898]]
        + [[-0.08274148, -0.62700068]],
        atol=1e-8,
    )
    np.testing.assert_allclose(
        params["W2"], [[-0.03098412, -0.33744411, -0.92904268, 0.62552248]], atol=1e-8
    )


def test_inits_take_a_dtype_and_a_device():
    for init in (
        initialize_parameters_zeros,
        initialize_parameters_random,
        initialize_parameters_he,
    ):
        params = init([3, 2, 1], device="cpu", dtype="float32")
        assert all(v.dtype == np.float32 for v in params.values())
        np.testing.assert_array_equal(params["W1"], init([3, 2, 1])["W1"].astype(np.float32))
    with pytest.raises(InputError, match="positive integers"):
        initialize_parameters_he([3, 0, 1])


# --- L2 regularisation -------------------------------------------------------------------


@pytest.mark.parametrize("dims", [[4, 3, 1], DIMS, [4, 6, 5, 3, 1]])
def test_cost_with_regularization(backend, dims):
    P = host_parameters(dims)
    X, Y = host_data(dims[0], 7)
    AL = ref_forward(X, P)[0][-1]
    cost = compute_cost_with_regularization(
        backend.asarray(AL), backend.asarray(Y), on(backend, P), 0.7
    )
    assert backend.is_own(cost) and cost.shape == ()
    close(cost, ref_cost(AL, Y, P, 0.7))
    plain = compute_cost(backend.asarray(AL), backend.asarray(Y))
    same = compute_cost_with_regularization(
        backend.asarray(AL), backend.asarray(Y), on(backend, P), 0
    )
    assert float(same) == float(plain)
    cost32 = compute_cost_with_regularization(
        backend.asarray(AL, "float32"), backend.asarray(Y, "float32"), on(backend, P, "float32"), 1
    )
    assert cost32.dtype == backend.xp.float32


def test_cost_with_regularization_course_case():
    np.random.seed(1)
    Y = np.array([[1, 1, 0, 1, 0]], dtype=np.float64)
    P = {}
    for name, shape in [("W1", (2, 3)), ("b1", (2, 1)), ("W2", (3, 2))]:
        P[name] = np.random.randn(*shape)
    for name, shape in [("b2", (3, 1)), ("W3", (1, 3)), ("b3", (1, 1))]:
        P[name] = np.random.randn(*shape)
    a3 = np.array([[0.40682402, 0.01629284, 0.16722898, 0.10118111, 0.40682402]])
    assert float(compute_cost_with_regularization(a3, Y, P, 0.1)) == pytest.approx(
        1.78648594516, abs=1e-10
    )


@pytest.mark.parametrize("dims", [DIMS, [4, 6, 5, 3, 1]])
def test_backward_with_regularization(backend, dims):
    P = host_parameters(dims)
    X, Y = host_data(dims[0], 9)
    As, Zs = ref_forward(X, P)
    AL, caches = L_model_forward(backend.asarray(X), on(backend, P))
    grads = L_model_backward_with_regularization(AL, backend.asarray(Y), caches, 0.3)
    expected = ref_backward(Y, P, As, Zs, lambd=0.3)
    for key, value in expected.items():
        assert backend.is_own(grads[key])
        close(grads[key], value, rtol=1e-10)
    plain = L_model_backward(AL, backend.asarray(Y), caches)
    unregularised = L_model_backward_with_regularization(AL, backend.asarray(Y), caches, 0.0)
    assert sorted(plain) == sorted(unregularised)
    for key in plain:
        np.testing.assert_array_equal(to_numpy(unregularised[key]), to_numpy(plain[key]))


def test_l2_gradient_is_dw_plus_lambd_over_m_w(backend):
    dw, w = np.array([[0.5, -1.0]]), np.array([[2.0, 3.0]])
    out = l2_gradient(backend.asarray(dw), backend.asarray(w), 0.2, 4)
    close(out, dw + 0.2 / 4 * w, rtol=0, atol=0)


# --- dropout -------------------------------------------------------------------------------


def ref_masks(dims, m, keep_prob, seed=1):
    rng = np.random.RandomState(seed)  # np.random.seed(1), then one rand per hidden layer
    return [(rng.rand(dims[k], m) < keep_prob).astype(np.float64) for k in range(1, len(dims) - 1)]


@pytest.mark.parametrize("dims", [DIMS, [4, 6, 5, 3, 1]])
def test_dropout_forward_and_backward(backend, dims):
    keep_prob, m = 0.7, 11
    P = host_parameters(dims)
    X, Y = host_data(dims[0], m)
    masks = ref_masks(dims, m, keep_prob)
    As, Zs = ref_forward(X, P, masks, keep_prob)
    AL, caches, D = L_model_forward_with_dropout(backend.asarray(X), on(backend, P), keep_prob)
    assert backend.is_own(AL) and len(D) == len(dims) - 2 == len(caches) - 1
    close(AL, As[-1])
    for layer, mask in enumerate(masks, start=1):
        np.testing.assert_array_equal(to_numpy(D[layer - 1]), mask)
        close(caches[layer][0][0], As[layer])  # layer l + 1 sees the dropped-out A_l
    grads = L_model_backward_with_dropout(AL, backend.asarray(Y), caches, D, keep_prob)
    for key, value in ref_backward(Y, P, As, Zs, masks, keep_prob).items():
        close(grads[key], value, rtol=1e-10)
    with pytest.raises(ShapeError, match="one dropout mask per hidden layer"):
        L_model_backward_with_dropout(AL, backend.asarray(Y), caches, D[:-1], keep_prob)


def test_keep_prob_one_is_the_plain_network_bit_for_bit(backend):
    P = on(backend, host_parameters(DIMS))
    X, Y = (backend.asarray(a) for a in host_data(DIMS[0], 13))
    AL, caches = L_model_forward(X, P)
    AL_d, caches_d, masks = L_model_forward_with_dropout(X, P, 1.0)
    np.testing.assert_array_equal(to_numpy(AL_d), to_numpy(AL))
    for (lin, z), (lin_d, z_d) in zip(caches, caches_d, strict=True):
        for a, b in zip((*lin, z), (*lin_d, z_d), strict=True):
            np.testing.assert_array_equal(to_numpy(b), to_numpy(a))
    plain = L_model_backward(AL, Y, caches)
    dropped = L_model_backward_with_dropout(AL_d, Y, caches_d, masks, 1.0)
    assert sorted(plain) == sorted(dropped)
    for key in plain:
        np.testing.assert_array_equal(to_numpy(dropped[key]), to_numpy(plain[key]))


def test_dropout_keeps_float32(backend):
    P = on(backend, host_parameters(DIMS), "float32")
    X = backend.asarray(host_data(DIMS[0], 5)[0], "float32")
    AL, _, masks = L_model_forward_with_dropout(X, P, 0.5, seed=None)
    assert AL.dtype == backend.xp.float32 and all(D.dtype == backend.xp.float32 for D in masks)


def test_dropout_course_case():
    np.random.seed(1)
    X = np.random.randn(3, 5)
    P = {}
    for name, shape in [("W1", (2, 3)), ("b1", (2, 1)), ("W2", (3, 2))]:
        P[name] = np.random.randn(*shape)
    for name, shape in [("b2", (3, 1)), ("W3", (1, 3)), ("b3", (1, 1))]:
        P[name] = np.random.randn(*shape)
    A3, _, _ = L_model_forward_with_dropout(X, P, keep_prob=0.7)
    np.testing.assert_allclose(
        A3, [[0.36974721, 0.00305176, 0.04565099, 0.49683389, 0.36974721]], atol=1e-8
    )


# --- gradient checking ---------------------------------------------------------------------


def test_vectors_round_trip(backend):
    P = on(backend, host_parameters(DIMS))
    theta, keys = dictionary_to_vector(P)
    n = sum(math.prod(v.shape) for v in P.values())
    assert theta.shape == (n, 1) and len(keys) == n
    assert keys[:20] == ["W1"] * 20 and keys[20:25] == ["b1"] * 5 and keys[-1] == "b3"
    back = vector_to_dictionary(theta, DIMS)
    for key, value in P.items():
        np.testing.assert_array_equal(to_numpy(back[key]), to_numpy(value))
    grads = {f"d{k}": v for k, v in P.items()} | {"dA1": backend.asarray(np.ones((5, 2)))}
    np.testing.assert_array_equal(to_numpy(gradients_to_vector(grads)), to_numpy(theta))
    with pytest.raises(ShapeError, match="theta must have shape"):
        vector_to_dictionary(theta[:-1, :], DIMS)


@pytest.mark.parametrize("lambd", [0.0, 0.7])
def test_gradient_check_of_the_l_layer_model(backend, lambd):
    P = on(backend, host_parameters(DIMS))
    X, Y = (backend.asarray(a) for a in host_data(DIMS[0], 6))
    AL, caches = L_model_forward(X, P)
    grads = L_model_backward_with_regularization(AL, Y, caches, lambd)
    difference = gradient_check_n(P, grads, X, Y, lambd=lambd)
    assert isinstance(difference, float) and difference < 2e-7
    if lambd:  # the gradients without the L2 term are wrong for the regularised cost
        plain = L_model_backward(AL, Y, caches)
        assert gradient_check_n(P, plain, X, Y, lambd=lambd) > 1e-4
    wrong = dict(grads)
    wrong["db2"] = grads["db2"] * 1.01 + 1e-3
    assert gradient_check_n(P, wrong, X, Y, lambd=lambd) > 1e-4


def test_gradient_check_prints_the_course_message(capsys):
    P = host_parameters([3, 2, 1])
    X, Y = host_data(3, 4)
    AL, caches = L_model_forward(X, P)
    gradient_check_n(P, L_model_backward(AL, Y, caches), X, Y, print_msg=True)
    assert (
        "Your backward propagation works perfectly fine! difference = " in capsys.readouterr().out
    )


def test_gradient_check_refuses_float32(backend):
    P = on(backend, host_parameters(DIMS), "float32")
    X, Y = (backend.asarray(a, "float32") for a in host_data(DIMS[0], 6))
    AL, caches = L_model_forward(X, P)
    grads = L_model_backward(AL, Y, caches)
    with pytest.raises(InputError, match="meaningless in float32.*use float64"):
        gradient_check_n(P, grads, X, Y)


# --- mini-batches ------------------------------------------------------------------------


@pytest.mark.parametrize(("m", "size", "seed"), [(148, 64, 0), (128, 64, 3), (5, 1, 2), (7, 10, 1)])
def test_random_mini_batches(backend, m, size, seed):
    X = np.arange(3 * m, dtype=np.float64).reshape(3, m)
    Y = (np.arange(m) % 2).reshape(1, m).astype(np.float64)
    batches = random_mini_batches(backend.asarray(X), backend.asarray(Y), size, seed)
    permutation = np.random.RandomState(seed).permutation(m)
    sizes = [size] * (m // size) + ([m % size] if m % size else [])
    assert [b[0].shape for b in batches] == [(3, s) for s in sizes]
    assert [b[1].shape for b in batches] == [(1, s) for s in sizes]
    for k, (bx, by) in enumerate(batches):
        columns = permutation[k * size : (k + 1) * size]
        assert backend.is_own(bx) and backend.is_own(by)
        np.testing.assert_array_equal(to_numpy(bx), X[:, columns])
        np.testing.assert_array_equal(to_numpy(by), Y[:, columns])


def test_random_mini_batches_course_shapes_and_errors():
    X, Y = np.zeros((12288, 148)), np.zeros((1, 148))
    shapes = [(bx.shape, by.shape) for bx, by in random_mini_batches(X, Y)]
    assert shapes == [((12288, 64), (1, 64))] * 2 + [((12288, 20), (1, 20))]
    with pytest.raises(InputError, match="mini_batch_size must be an integer >= 1"):
        random_mini_batches(X, Y, 0)
    with pytest.raises(ShapeError, match="same number of columns"):
        random_mini_batches(X, Y[:, :-1])


# --- momentum, Adam ------------------------------------------------------------------------


def optimizer_case(seed: int = 1):
    P = host_parameters([3, 2, 3], seed)
    rng = np.random.RandomState(seed + 10)
    G = {f"d{k}": rng.randn(*v.shape) for k, v in P.items()}
    return P, G


def test_momentum(backend):
    P, G = optimizer_case()
    beta, lr = 0.9, 0.01
    params, v = on(backend, P), initialize_velocity(on(backend, P))
    assert sorted(v) == sorted(G) and all(not np.any(to_numpy(x)) for x in v.values())
    ref_p, ref_v = dict(P), {k: np.zeros_like(g) for k, g in G.items()}
    for _ in range(3):
        params, v = update_parameters_with_momentum(params, on(backend, G), v, beta, lr)
        for key in P:
            ref_v[f"d{key}"] = beta * ref_v[f"d{key}"] + (1 - beta) * G[f"d{key}"]
            ref_p[key] = ref_p[key] - lr * ref_v[f"d{key}"]
    for key in P:
        close(params[key], ref_p[key])
        close(v[f"d{key}"], ref_v[f"d{key}"])
        assert backend.is_own(params[key])


def test_adam(backend):
    P, G = optimizer_case()
    lr, b1, b2, eps = 0.02, 0.8, 0.99, 1e-6
    params = on(backend, P)
    v, s = initialize_adam(params)
    ref_p = dict(P)
    ref_v = {k: np.zeros_like(g) for k, g in G.items()}
    ref_s = {k: np.zeros_like(g) for k, g in G.items()}
    for t in (1, 2, 3):
        params, v, s, v_hat, s_hat = update_parameters_with_adam(
            params, on(backend, G), v, s, t, lr, b1, b2, eps
        )
        for key in P:
            g = G[f"d{key}"]
            ref_v[f"d{key}"] = b1 * ref_v[f"d{key}"] + (1 - b1) * g
            ref_s[f"d{key}"] = b2 * ref_s[f"d{key}"] + (1 - b2) * g * g
            vc = ref_v[f"d{key}"] / (1 - b1**t)
            sc = ref_s[f"d{key}"] / (1 - b2**t)
            ref_p[key] = ref_p[key] - lr * vc / (np.sqrt(sc) + eps)
    for key in P:
        close(params[key], ref_p[key])
        close(v[f"d{key}"], ref_v[f"d{key}"])
        close(s[f"d{key}"], ref_s[f"d{key}"])
        close(v_hat[f"d{key}"], ref_v[f"d{key}"] / (1 - b1**3))
        close(s_hat[f"d{key}"], ref_s[f"d{key}"] / (1 - b2**3))


def test_updates_keep_float32(backend):
    P, G = optimizer_case()
    params, grads = on(backend, P, "float32"), on(backend, G, "float32")
    out, v = update_parameters_with_momentum(params, grads, initialize_velocity(params), 0.9, 0.1)
    assert all(x.dtype == backend.xp.float32 for x in (*out.values(), *v.values()))
    out, v, s, vh, sh = update_parameters_with_adam(params, grads, *initialize_adam(params), 1)
    for table in (out, v, s, vh, sh):
        assert all(x.dtype == backend.xp.float32 for x in table.values())


def test_per_array_updates_are_the_dict_updates(backend):
    P, G = optimizer_case()
    params, grads = on(backend, P), on(backend, G)
    v = initialize_velocity(params)
    by_dict, _ = update_parameters_with_momentum(params, grads, v, 0.5, 0.1)
    w, v_w = momentum_update(params["W1"], grads["dW1"], v["dW1"], 0.5, 0.1)
    np.testing.assert_array_equal(to_numpy(w), to_numpy(by_dict["W1"]))
    close(v_w, 0.5 * G["dW1"], rtol=0, atol=0)
    vv, ss = initialize_adam(params)
    by_dict = update_parameters_with_adam(params, grads, vv, ss, 1)
    by_array = adam_update(
        params["b2"], grads["db2"], vv["db2"], ss["db2"], 1, 0.01, 0.9, 0.999, 1e-8
    )
    np.testing.assert_array_equal(to_numpy(by_array[0]), to_numpy(by_dict[0]["b2"]))
    for got, table in zip(by_array[1:], by_dict[1:], strict=True):
        np.testing.assert_array_equal(to_numpy(got), to_numpy(table["db2"]))


def test_momentum_and_adam_course_cases():
    np.random.seed(1)
    P = {"W1": np.random.randn(2, 3), "b1": np.random.randn(2, 1)}
    P |= {"W2": np.random.randn(3, 3), "b2": np.random.randn(3, 1)}
    G = {"dW1": np.random.randn(2, 3), "db1": np.random.randn(2, 1)}
    G |= {"dW2": np.random.randn(3, 3), "db2": np.random.randn(3, 1)}
    params, v = update_parameters_with_momentum(P, G, initialize_velocity(P), 0.9, 0.01)
    W1 = [[1.62544598, -0.61290114, -0.52907334], [-1.07347112, 0.86450677, -2.30085497]]
    np.testing.assert_allclose(params["W1"], W1, atol=1e-8)
    vW1 = [[-0.11006192, 0.11447237, 0.09015907], [0.05024943, 0.09008559, -0.06837279]]
    np.testing.assert_allclose(v["dW1"], vW1, atol=1e-8)
    params, v, s, _, _ = update_parameters_with_adam(P, G, *initialize_adam(P), 2)
    W1 = [[1.63178673, -0.61919778, -0.53561312], [-1.08040999, 0.85796626, -2.29409733]]
    np.testing.assert_allclose(params["W1"], W1, atol=1e-8)
    sW1 = [[0.00121136, 0.00131039, 0.00081287], [0.0002525, 0.00081154, 0.00046748]]
    np.testing.assert_allclose(s["dW1"], sW1, atol=1e-8)


# --- learning-rate decay -------------------------------------------------------------------


def test_learning_rate_decay():
    for lr0, epoch, rate in [(0.5, 2, 1), (0.1, 0, 3.0), (0.02, 17, 0.25)]:
        assert update_lr(lr0, epoch, rate) == 1 / (1 + rate * epoch) * lr0
    assert update_lr(0.5, 2, 1) == pytest.approx(0.5 / 3, rel=1e-15)
    for epoch, steps in [(0, 0), (999, 0), (1000, 1), (2999, 2), (3000, 3)]:
        assert schedule_lr_decay(0.5, epoch, 0.3) == 1 / (1 + 0.3 * steps) * 0.5
    assert schedule_lr_decay(0.5, 10, 1, time_interval=4) == 0.5 / 3
    assert math.isclose(schedule_lr_decay(0.5, 100, 1), 0.5)


# --- bad hyper-parameters ------------------------------------------------------------------


def _bad_calls():
    P, G = optimizer_case()
    X, Y = host_data(3, 4)
    v = initialize_velocity(P)
    vv, ss = initialize_adam(P)
    AL = np.full((1, 4), 0.5)
    return [
        ("keep_prob", lambda kp: L_model_forward_with_dropout(X, P, kp), [0, 1.5, -0.1], "(0, 1]"),
        ("lambd", lambda lam: compute_cost_with_regularization(AL, Y, P, lam), [-1e-3], ">= 0"),
        ("beta", lambda b: update_parameters_with_momentum(P, G, v, b, 0.1), [1, -0.1], "[0, 1)"),
        (
            "beta1",
            lambda b: update_parameters_with_adam(P, G, vv, ss, 1, 0.01, b),
            [1.0, -0.5],
            "[0, 1)",
        ),
        (
            "beta2",
            lambda b: update_parameters_with_adam(P, G, vv, ss, 1, 0.01, 0.9, b),
            [1.2, float("nan")],
            "beta2 must",
        ),
        (
            "epsilon",
            lambda e: update_parameters_with_adam(P, G, vv, ss, 1, epsilon=e),
            [0, -1e-8],
            "> 0",
        ),
        ("t", lambda t: update_parameters_with_adam(P, G, vv, ss, t), [0, -1, 1.5], ">= 1"),
        ("decay_rate", lambda r: update_lr(0.1, 3, r), [None, -1], "decay_rate"),
        ("decay_rate", lambda r: schedule_lr_decay(0.1, 3, r), [None], "needs a decay_rate"),
        ("time_interval", lambda i: schedule_lr_decay(0.1, 3, 1, i), [0, -5], "> 0"),
        ("epsilon", lambda e: gradient_check_n(P, G, X, Y, e), [0.0], "> 0"),
        ("lambd", lambda lam: L_model_backward_with_regularization(AL, Y, [], lam), [-1], ">= 0"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_bad_hyper_parameters_name_the_valid_range(case):
    name, call, values, text = _bad_calls()[case]
    for value in values:
        with pytest.raises(InputError, match=name) as info:
            call(value)
        assert text in str(info.value)


def test_missing_state_or_caches_get_deepnet_errors():
    P, G = optimizer_case()
    v = initialize_velocity(P)
    with pytest.raises(InputError, match="grads must be a dict with keys .* missing db2"):
        update_parameters_with_momentum(P, {k: g for k, g in G.items() if k != "db2"}, v, 0.9, 1)
    with pytest.raises(InputError, match=r"s \(from initialize_adam\) .* missing dW1"):
        update_parameters_with_adam(P, G, v, {}, 1)
    with pytest.raises(InputError, match="parameters must have keys W1, b1"):
        initialize_adam({"W1": P["W1"]})
    X, Y = host_data(3, 4)
    with pytest.raises(InputError, match="caches is empty"):
        L_model_backward_with_regularization(np.full((1, 4), 0.5), Y, [], 0.1)


# --- a functional training loop on the course's cat data ------------------------------------


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_he_minibatch_l2_loop_on_the_cat_data_matches_numpy(backend, real_data_dir, optimizer):
    """He init + mini-batches + L2 + momentum/Adam, step by step against a NumPy loop."""
    from deepnet.data import load_dataset  # only with the real data

    data = load_dataset(real_data_dir)
    dims, lambd, lr, epochs = [12288, 20, 7, 5, 1], 0.1, 0.0007, 2
    params = initialize_parameters_he(dims)
    ref_p = {k: np.array(v) for k, v in params.items()}
    params = on(backend, params)
    X, Y = backend.asarray(data.train_x), backend.asarray(data.train_y)
    state = initialize_velocity(params) if optimizer == "momentum" else initialize_adam(params)
    ref_1 = {f"d{k}": np.zeros_like(v) for k, v in ref_p.items()}
    ref_2 = {f"d{k}": np.zeros_like(v) for k, v in ref_p.items()}
    t, costs, ref_costs = 0, [], []
    for epoch in range(epochs):
        permutation = np.random.RandomState(epoch + 1).permutation(data.train_x.shape[1])
        batches = random_mini_batches(X, Y, 64, seed=epoch + 1)
        for k, (bx, by) in enumerate(batches):
            AL, caches = L_model_forward(bx, params)
            costs.append(float(compute_cost_with_regularization(AL, by, params, lambd)))
            grads = L_model_backward_with_regularization(AL, by, caches, lambd)
            t += 1
            if optimizer == "momentum":
                params, state = update_parameters_with_momentum(params, grads, state, 0.9, lr)
            else:
                params, *state = update_parameters_with_adam(params, grads, *state, t, lr)
                state = state[:2]
            # the same step in plain NumPy, from the formulas
            columns = permutation[k * 64 : (k + 1) * 64]
            rx, ry = data.train_x[:, columns], data.train_y[:, columns]
            As, Zs = ref_forward(rx, ref_p)
            ref_costs.append(ref_cost(As[-1], ry, ref_p, lambd))
            g = ref_backward(ry, ref_p, As, Zs, lambd=lambd)
            for key in ref_p:
                dk = f"d{key}"
                if optimizer == "momentum":
                    ref_1[dk] = 0.9 * ref_1[dk] + 0.1 * g[dk]
                    ref_p[key] = ref_p[key] - lr * ref_1[dk]
                else:
                    ref_1[dk] = 0.9 * ref_1[dk] + 0.1 * g[dk]
                    ref_2[dk] = 0.999 * ref_2[dk] + 0.001 * g[dk] ** 2
                    step = ref_1[dk] / (1 - 0.9**t) / (np.sqrt(ref_2[dk] / (1 - 0.999**t)) + 1e-8)
                    ref_p[key] = ref_p[key] - lr * step
    assert len(costs) == epochs * 4
    np.testing.assert_allclose(costs, ref_costs, rtol=1e-12)
    for key, value in ref_p.items():
        close(params[key], value, rtol=1e-9, atol=1e-13)
