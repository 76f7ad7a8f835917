"""The second course's training tools through the engine: optimizers, decay, L2, dropout,
early stopping; exact against NumPy loops written here from the formulas, resumable bit for
bit, and taken by the fast paths only where they stay exact."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepnet import L_layer_model, two_layer_model
from deepnet.backend import to_numpy
from deepnet.course_tools import initialize_parameters_he, initialize_parameters_random
from deepnet.course_updates import adam_update
from deepnet.early_stopping import EarlyStopping
from deepnet.engine.fit import TrainState
from deepnet.engine.sources import MemorySteps, cuda_supports, memory_source
from deepnet.errors import InputError
from deepnet.fastpath import GramSteps
from deepnet.initialization import draw_parameters
from deepnet.optim import GradientDescent
from deepnet.optimizers import Adam, Decay, Momentum, adam_step, make_optimizer
from deepnet.regularization import Regularization
from deepnet.step import optimizer_step
from deepnet.training import fit, like

# ------------------------------------------------------------------ a NumPy reference


def forward(X, P, masks=(), keep_prob=1.0):
    """Activations A0 = X, A1 (after dropout), ..., AL and the Zs, from the formulas."""
    L = len(P) // 2
    As, Zs = [X], []
    for layer in range(1, L + 1):
        Z = P[f"W{layer}"] @ As[-1] + P[f"b{layer}"]
        A = 1 / (1 + np.exp(-Z)) if layer == L else np.maximum(Z, 0)
        if masks and layer < L:
            A = A * masks[layer - 1] / keep_prob
        Zs.append(Z)
        As.append(A)
    return As, Zs


def cost_of(AL, Y, P, lambd=0.0):
    m = Y.shape[1]
    cross = -np.sum(Y * np.log(AL) + (1 - Y) * np.log(1 - AL)) / m
    squares = sum(np.sum(P[f"W{layer}"] ** 2) for layer in range(1, len(P) // 2 + 1))
    return cross + lambd / (2 * m) * squares


def backward(Y, P, As, Zs, masks=(), keep_prob=1.0, lambd=0.0):
    L, m = len(P) // 2, Y.shape[1]
    grads, dZ = {}, As[-1] - Y
    for layer in range(L, 0, -1):
        grads[f"W{layer}"] = dZ @ As[layer - 1].T / m + lambd / m * P[f"W{layer}"]
        grads[f"b{layer}"] = dZ.sum(axis=1, keepdims=True) / m
        if layer > 1:
            dA = P[f"W{layer}"].T @ dZ
            if masks:
                dA = dA * masks[layer - 2] / keep_prob
            dZ = dA * (Zs[layer - 2] > 0)
    return grads


class Reference:
    """The course's update rules, one NumPy array at a time."""

    def __init__(self, kind, lr, decay_rate=None, interval=None, beta=0.9, b1=0.9, b2=0.999):
        self.kind, self.lr0, self.rate, self.interval = kind, lr, decay_rate, interval
        self.beta, self.b1, self.b2, self.t, self.v, self.s = beta, b1, b2, 0, {}, {}

    def lr(self, epoch):
        if self.rate is None:
            return self.lr0
        steps = epoch if self.interval is None else math.floor(epoch / self.interval)
        return self.lr0 / (1 + self.rate * steps)

    def update(self, P, g, epoch):
        lr = self.lr(epoch)
        self.t += 1
        for k in P:
            if self.kind == "gd":
                P[k] = P[k] - lr * g[k]
                continue
            self.v[k] = self.v.get(k, 0) * (self.b1 if self.kind == "adam" else self.beta)
            if self.kind == "momentum":
                self.v[k] = self.v[k] + (1 - self.beta) * g[k]
                P[k] = P[k] - lr * self.v[k]
            else:
                self.v[k] = self.v[k] + (1 - self.b1) * g[k]
                self.s[k] = self.b2 * self.s.get(k, 0) + (1 - self.b2) * g[k] ** 2
                v_hat, s_hat = self.v[k] / (1 - self.b1**self.t), self.s[k] / (1 - self.b2**self.t)
                P[k] = P[k] - lr * v_hat / (np.sqrt(s_hat) + 1e-8)


def reference_run(X, Y, P, rule, epochs, *, batch_size=None, seed=1, lambd=0.0, keep_prob=1.0):
    """Per-epoch costs (each batch's cost before its update, weighted by its size).

    Batches: ``RandomState([seed, epoch]).permutation(m)`` cut in order; dropout masks of
    batch k: ``RandomState([seed, epoch, k]).rand(n_l, m_k) < keep_prob``, layer by layer.
    """
    P, m, costs = {k: np.array(v) for k, v in P.items()}, X.shape[1], []
    sizes = [P[f"b{layer}"].shape[0] for layer in range(1, len(P) // 2)]
    for epoch in range(epochs):
        shuffled = np.random.RandomState([seed, epoch]).permutation(m) if batch_size else None
        order = np.arange(m) if batch_size is None else shuffled
        size = m if batch_size is None else batch_size
        total = 0.0
        for k, start in enumerate(range(0, m, size)):
            cols = order[start : start + size]
            x, y = X[:, cols], Y[:, cols]
            masks = []
            if keep_prob < 1:
                rng = np.random.RandomState([seed, epoch, k])
                masks = [(rng.rand(n, len(cols)) < keep_prob).astype(float) for n in sizes]
            As, Zs = forward(x, P, masks, keep_prob)
            total += cost_of(As[-1], y, P, lambd) * (len(cols) / m)
            rule.update(P, backward(y, P, As, Zs, masks, keep_prob, lambd), epoch)
        costs.append(total)
    return costs, P


# ------------------------------------------------------------------ the course's cat data


CASES = {
    # name: (model-function options, the reference rule, batch size, epochs)
    "adam-minibatch": (dict(optimizer="adam", learning_rate=0.0007), ("adam", 0.0007), 64, 60),
    "momentum-minibatch-l2": (
        dict(optimizer="momentum", learning_rate=0.007, beta=0.9, lambd=0.7),
        ("momentum", 0.007), 64, 60,
    ),
    "adam-l2-decay": (
        dict(optimizer="adam", learning_rate=0.0007, lambd=0.3, decay_rate=0.3),
        ("adam", 0.0007, 0.3), 64, 50,
    ),
    "gd-l2-scheduled-decay-full-batch": (
        dict(learning_rate=0.0075, lambd=0.7, decay_rate=1.0, time_interval=40),
        ("gd", 0.0075, 1.0, 40), None, 200,
    ),
    "adam-dropout-minibatch": (
        dict(optimizer="adam", learning_rate=0.0007, keep_prob=0.8), ("adam", 0.0007), 64, 40,
    ),
    "gd-dropout-l2-full-batch": (
        dict(learning_rate=0.0075, keep_prob=0.85, lambd=0.2), ("gd", 0.0075), None, 100,
    ),
    "momentum-l2-full-batch": (
        dict(optimizer="momentum", learning_rate=0.0075, lambd=0.7, decay_rate=0.01),
        ("momentum", 0.0075, 0.01), None, 200,
    ),
}  # fmt: skip


@pytest.mark.parametrize("gram", [None, False])
@pytest.mark.parametrize("case", CASES)
def test_the_cat_data_runs_match_a_numpy_loop(real_data_dir, case, gram):
    """Each recorded cost equals the NumPy loop's to 1e-12 relative, every epoch."""
    from deepnet.data import load_dataset

    options, rule, batch_size, epochs = CASES[case]
    if gram is False and batch_size is not None:
        pytest.skip("these mini-batch cases (Adam, L2, dropout) decline the Gram path")
    data = load_dataset(real_data_dir)
    X, Y = data.train_x, data.train_y
    lambd = options.get("lambd", 0.0)
    dims = [12288, 20, 7, 5, 1]
    params, costs = L_layer_model(
        X, Y, dims, num_iterations=epochs, init="he", seed=3, batch_size=batch_size,
        record_every=1, gram=gram, **options,
    )  # fmt: skip
    keys = dict(zip(("kind", "lr", "decay_rate", "interval"), rule, strict=False))
    want, final = reference_run(
        X, Y, initialize_parameters_he(dims), Reference(**keys), epochs,
        batch_size=batch_size, seed=3, lambd=lambd, keep_prob=options.get("keep_prob", 1.0),
    )  # fmt: skip
    np.testing.assert_allclose(costs, want, rtol=1e-12)
    assert costs[-1] < costs[0]
    for k, v in final.items():
        np.testing.assert_allclose(to_numpy(params[k]), v, rtol=1e-8, atol=1e-11, err_msg=k)


# ------------------------------------------------------------------ small data, every backend


def data(n_x=40, m=24, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(m, n_x)).T / 255.0
    return X, (rng.random((1, m)) < 0.5).astype(np.float64)


def start(dims, X, init="he"):
    return TrainState(like(draw_parameters(dims, init, 2), X))


OPTIMIZERS = {
    "gd-decay": lambda: GradientDescent(0.05, Decay(0.5)),
    "momentum": lambda: Momentum(0.05, 0.8),
    "momentum-decay-steps": lambda: Momentum(0.05, 0.9, Decay(1.0, 7)),
    "adam": lambda: Adam(0.01),
    "adam-decay": lambda: Adam(0.01, 0.8, 0.99, 1e-7, Decay(0.1)),
}


@pytest.mark.parametrize("reg", [(0.0, 1.0), (0.5, 1.0), (0.3, 0.7)], ids=str)
@pytest.mark.parametrize("batch_size", [None, 7])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_resume_is_bit_identical_for_every_optimizer(name, batch_size, reg):
    X, Y = data()
    lambd, keep_prob = reg
    kw = dict(num_iterations=50, record_every=3, batch_size=batch_size, lambd=lambd,
              keep_prob=keep_prob, seed=5)  # fmt: skip
    whole = fit(X, Y, start([40, 6, 3, 1], X), optimizer=OPTIMIZERS[name](), **kw)
    stops = iter([False] * 20 + [True])
    half = fit(X, Y, start([40, 6, 3, 1], X), optimizer=OPTIMIZERS[name](),
               should_stop=lambda: next(stops), **kw)  # fmt: skip
    assert half.stopped_early and half.iteration == 21
    host = TrainState(
        {k: np.array(v) for k, v in half.parameters.items()}, list(half.costs), half.iteration,
        resume={k: v if isinstance(v, (int, float)) else np.array(v)
                for k, v in half.resume.items()},
    )  # fmt: skip
    resumed = fit(X, Y, host, optimizer=OPTIMIZERS[name](), **kw)
    assert resumed.costs == whole.costs
    for k, v in whole.parameters.items():
        assert np.array_equal(resumed.parameters[k], v), k


def test_adam_keeps_its_moments_and_count_in_the_resume_record():
    X, Y = data()
    got = fit(X, Y, start([40, 3, 1], X), optimizer=Adam(0.01), num_iterations=4, batch_size=10)
    assert got.resume["opt.t"] == 12  # 3 batches x 4 epochs: t counts updates
    assert {f"opt.{m}.d{k}" for m in "vs" for k in ("W1", "b1", "W2", "b2")} <= set(got.resume)


@pytest.mark.parametrize("name", ["gd-decay", "momentum", "momentum-decay-steps"])
@pytest.mark.parametrize("reg", [(0.0, 1.0), (0.6, 1.0), (0.4, 0.6)], ids=str)
def test_the_gram_path_stays_exact_for_what_keeps_w1_linear(backend, name, reg):
    """Gradient descent, momentum, decays, L2 and hidden dropout: the Gram path equals the
    generic step to rounding, on every backend (and resumes exactly)."""
    X, Y = (backend.asarray(a) for a in data())
    lambd, keep_prob = reg
    kw = dict(num_iterations=40, record_every=4, lambd=lambd, keep_prob=keep_prob)
    params = start([40, 5, 3, 1], X).parameters
    assert isinstance(memory_source(params, X, Y, OPTIMIZERS[name](), iterations_left=40,
                                    reg=Regularization(lambd, keep_prob)), GramSteps)  # fmt: skip
    gram = fit(X, Y, start([40, 5, 3, 1], X), optimizer=OPTIMIZERS[name](), gram=True, **kw)
    plain = fit(X, Y, start([40, 5, 3, 1], X), optimizer=OPTIMIZERS[name](), gram=False, **kw)
    np.testing.assert_allclose(gram.costs, plain.costs, rtol=1e-11)
    for k, v in plain.parameters.items():
        np.testing.assert_allclose(to_numpy(gram.parameters[k]), to_numpy(v), rtol=1e-9,
                                   atol=1e-12, err_msg=k)  # fmt: skip


@pytest.mark.parametrize("t", [1, 2, 50])
def test_the_engines_folded_adam_is_the_courses_adam(backend, t):
    """adam_step: the course's moments to the bit, the parameters to rounding; no argument
    changed (marks and resume records hold them)."""
    rng = np.random.RandomState(t)
    host_w, host_dw, host_v = rng.randn(3, 6, 5)
    host_s = rng.rand(6, 5) * (t > 1)  # zeros at t = 1, as the first update sees them
    w, dw, v, s = (backend.asarray(a) for a in (host_w, host_dw, host_v, host_s))
    hyper = (t, 0.01, 0.8, 0.99, 1e-7)
    w_new, v_new, s_new = adam_step(w, dw, v, s, *hyper)
    course_w, course_v, course_s, _, _ = adam_update(w, dw, v, s, *hyper)
    assert backend.is_own(w_new) and backend.is_own(v_new)
    assert np.array_equal(to_numpy(v_new), to_numpy(course_v))
    assert np.array_equal(to_numpy(s_new), to_numpy(course_s))
    np.testing.assert_allclose(to_numpy(w_new), to_numpy(course_w), rtol=1e-14, atol=1e-16)
    # and the formula itself, written here: lr v_hat / (sqrt(s_hat) + eps), hats by 1 - beta^t
    v_ref = 0.8 * host_v + 0.2 * host_dw
    s_ref = 0.99 * host_s + 0.01 * host_dw**2
    w_ref = host_w - 0.01 * (v_ref / (1 - 0.8**t)) / (np.sqrt(s_ref / (1 - 0.99**t)) + 1e-7)
    np.testing.assert_allclose(to_numpy(w_new), w_ref, rtol=1e-14, atol=1e-16)
    for got, before in zip((w, dw, v, s), (host_w, host_dw, host_v, host_s), strict=True):
        assert np.array_equal(to_numpy(got), before)  # nothing written in place


def test_adam_declines_the_gram_path_and_the_cuda_step(backend):
    X, Y = (backend.asarray(a) for a in data())
    params = like(draw_parameters([40, 4, 1], "he", 1), X)
    assert isinstance(memory_source(params, X, Y, Adam(0.01), iterations_left=100), MemorySteps)
    with pytest.raises(InputError, match="Gram path cannot run"):
        memory_source(params, X, Y, Adam(0.01), gram=True, iterations_left=100)
    assert cuda_supports("relu", GradientDescent(0.1))
    for optimizer in (Adam(0.1), Momentum(0.1), GradientDescent(0.1, Decay(1.0))):
        assert not cuda_supports("relu", optimizer)
    assert not cuda_supports("relu", GradientDescent(0.1), Regularization(lambd=0.1))
    assert not cuda_supports("relu", GradientDescent(0.1), Regularization(keep_prob=0.9))


def test_the_cuda_step_is_taken_only_for_plain_gradient_descent(fused_cuda_calls):
    taken = fused_cuda_calls
    X, Y = data()
    kw = dict(num_iterations=2, gram=False)
    fit(X, Y, start([40, 3, 1], X), learning_rate=0.1, **kw)
    assert taken == [0.1, 0.1]
    fit(X, Y, start([40, 3, 1], X), optimizer=Adam(0.1), **kw)
    fit(X, Y, start([40, 3, 1], X), optimizer=Momentum(0.1), **kw)
    fit(X, Y, start([40, 3, 1], X), learning_rate=0.1, lambd=0.1, **kw)
    fit(X, Y, start([40, 3, 1], X), learning_rate=0.1, keep_prob=0.8, **kw)
    assert taken == [0.1, 0.1]


def test_dropout_is_the_courses_inverted_dropout_with_masks_from_seed_iteration_batch(backend):
    X, Y = data(m=10)
    P = draw_parameters([40, 6, 4, 1], "he", 1)
    reg = Regularization(keep_prob=0.7, seed=9)
    masks = reg.masks([6, 4], 10, iteration=3, batch=2)
    assert [m.shape for m in masks] == [(6, 10), (4, 10)] and 0 < masks[0].mean() < 1
    again = Regularization(keep_prob=0.7, seed=9).masks([6, 4], 10, iteration=3, batch=2)
    assert all(np.array_equal(a, b) for a, b in zip(masks, again, strict=True))
    assert not np.array_equal(masks[0], reg.masks([6, 4], 10, iteration=3, batch=1)[0])
    got, cost, _ = optimizer_step(on(backend, P), backend.asarray(X), backend.asarray(Y),
                                  GradientDescent(0.1), {}, 3, reg=reg, batch=2)  # fmt: skip
    D = [m.astype(np.float64) for m in masks]
    As, Zs = forward(X, P, D, 0.7)
    g = backward(Y, P, As, Zs, D, 0.7)
    assert float(cost) == pytest.approx(cost_of(As[-1], Y, P), rel=1e-12)
    for k, v in P.items():
        np.testing.assert_allclose(to_numpy(got[k]), v - 0.1 * g[k], rtol=1e-11, atol=1e-14)


def test_keep_prob_one_and_lambd_zero_are_the_plain_network_bit_for_bit():
    X, Y = data()
    kw = dict(num_iterations=20, batch_size=5, learning_rate=0.05)
    plain = fit(X, Y, start([40, 5, 1], X), **kw)
    same = fit(X, Y, start([40, 5, 1], X), keep_prob=1.0, lambd=0.0, **kw)
    assert same.costs == plain.costs
    for k, v in plain.parameters.items():
        assert np.array_equal(same.parameters[k], v), k


def test_every_hidden_activation_combines_with_everything():
    X, Y = data()
    for hidden in ("tanh", "sigmoid", "leaky_relu"):
        kw = dict(hidden=hidden, lambd=0.2, keep_prob=0.8, num_iterations=30, record_every=5)
        runs = [
            fit(X, Y, start([40, 5, 3, 1], X), optimizer=Momentum(0.1), gram=gram, **kw)
            for gram in (False, True)
        ]
        np.testing.assert_allclose(runs[1].costs, runs[0].costs, rtol=1e-11)
        got = fit(X, Y, start([40, 5, 3, 1], X), optimizer=Adam(0.01, decay=Decay(0.1)),
                  batch_size=8, early_stopping=EarlyStopping(0.25, 50), **kw)  # fmt: skip
        assert got.costs[-1] < got.costs[0] and got.early_stopping is not None


# ------------------------------------------------------------------ early stopping


def test_early_stopping_stops_and_restores_the_best_parameters():
    X, Y = data(m=60, seed=3)
    rule = EarlyStopping(validation_fraction=0.2, patience=3, tol=0.0)
    got = fit(X, Y, start([40, 8, 1], X), optimizer=Adam(0.05), num_iterations=400,
              record_every=5, early_stopping=rule)  # fmt: skip
    info = got.early_stopping
    assert info["stopped"] and got.iteration < 400 and not got.stopped_early
    scores = info["validation_scores"]
    assert len(scores) == len(got.costs) and info["best_validation_accuracy"] == max(scores)
    best = scores.index(max(scores))
    assert info["best_iteration"] == 5 * best and len(scores) - 1 - best >= 3
    # the returned parameters are those after the best iteration: rerun to it and compare
    again = fit(X[:, :], Y, start([40, 8, 1], X), optimizer=Adam(0.05),
                num_iterations=info["best_iteration"] + 1, record_every=5,
                early_stopping=EarlyStopping(0.2, 10**6, 0.0))  # fmt: skip
    for k, v in again.parameters.items():
        assert np.array_equal(got.parameters[k], v), k


def test_early_stopping_holds_out_a_seeded_fraction():
    rule = EarlyStopping(0.1)
    train, held = rule.split(209, seed=1)
    assert len(held) == 21 and len(train) == 188  # scikit-learn's ceil(0.1 * m)
    assert sorted({*train, *held}) == list(range(209))
    assert np.array_equal(held, rule.split(209, seed=1)[1])
    assert not np.array_equal(held, rule.split(209, seed=2)[1])


def test_early_stopping_resumes_exactly():
    X, Y = data(m=60, seed=3)
    kw = dict(optimizer=Adam(0.05), num_iterations=300, record_every=5,
              early_stopping=EarlyStopping(0.2, 4, 0.0))  # fmt: skip
    whole = fit(X, Y, start([40, 8, 1], X), **kw)
    stops = iter([False] * 12 + [True])
    half = fit(X, Y, start([40, 8, 1], X), should_stop=lambda: next(stops), **kw)
    assert half.stopped_early and half.early_stopping is None
    resumed = fit(X, Y, half, **kw)
    assert resumed.costs == whole.costs and resumed.early_stopping == whole.early_stopping
    assert set(resumed.parameters) == set(whole.parameters)
    for k, v in whole.parameters.items():
        assert np.array_equal(resumed.parameters[k], v), k


# ------------------------------------------------------------------ the model functions


def test_model_functions_take_the_options_and_check_them():
    X, Y = data()
    params, costs = two_layer_model(X, Y, (40, 5, 1), num_iterations=30, init="he",
                                    optimizer="momentum", beta=0.8, lambd=0.1, keep_prob=0.9,
                                    decay_rate=0.1, record_every=10)  # fmt: skip
    assert len(costs) == 3 and costs[-1] < costs[0]
    bad = {
        "keep_prob": ({"keep_prob": 0}, r"keep_prob must be in \(0, 1\]"),
        "lambd": ({"lambd": -1}, "lambd must be >= 0"),
        "beta": ({"optimizer": "momentum", "beta": 1.0}, r"beta must be in \[0, 1\)"),
        "beta2": ({"optimizer": "adam", "beta2": -0.1}, r"beta2 must be in \[0, 1\)"),
        "epsilon": ({"optimizer": "adam", "epsilon": 0}, "epsilon must be > 0"),
        "decay": ({"time_interval": 100}, "decay needs a decay_rate"),
        "rate": ({"decay_rate": -1}, "decay_rate must be >= 0"),
        "interval": ({"decay_rate": 1, "time_interval": 0}, "time_interval must be > 0"),
        "optimizer": ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'; use one of"),
        "patience": ({"early_stopping": True, "patience": 0}, "patience"),
        "fraction": ({"early_stopping": True, "validation_fraction": 1.0}, r"in \(0, 1\)"),
        "unknown": ({"momentum": 0.9}, "unknown option"),
        "alone": ({"patience": 3}, "apply only with early_stopping=True"),
        "beside": ({"early_stopping": EarlyStopping(), "tol": 0.1}, "object itself"),
    }
    for name, (options, text) in bad.items():
        with pytest.raises(InputError, match=text):
            L_layer_model(X, Y, [40, 3, 1], num_iterations=1, **options)
        assert name


def test_an_optimizer_object_brings_its_own_learning_rate():
    X, Y = data()
    a, _ = L_layer_model(X, Y, [40, 3, 1], num_iterations=5, optimizer=Adam(0.02))
    b, _ = L_layer_model(X, Y, [40, 3, 1], num_iterations=5, optimizer="adam", learning_rate=0.02)
    for k, v in a.items():
        assert np.array_equal(b[k], v), k
    assert make_optimizer("adam", 0.1).config() == {
        "name": "adam", "learning_rate": 0.1, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8,
        "decay": None,
    }  # fmt: skip
    with pytest.raises(InputError, match="object itself"):
        L_layer_model(X, Y, [40, 3, 1], num_iterations=1, optimizer=Adam(0.1), beta1=0.5)


def test_inits_zeros_random_and_he_are_the_second_courses_draws():
    dims = [12, 5, 3, 1]
    for init, course in (
        ("he", initialize_parameters_he),
        ("random", initialize_parameters_random),
    ):
        drawn = draw_parameters(dims, init, 3)
        for k, v in course(dims).items():
            assert np.array_equal(drawn[k], v), (init, k)
    assert all(not v.any() for v in draw_parameters(dims, "zeros", 3).values())


def on(backend, table):
    return {k: backend.asarray(v) for k, v in table.items()}


# ------------------------------------------------------------------ gradients, other sources


@pytest.mark.parametrize("lambd", [0.0, 0.7])
def test_the_engines_l2_gradients_pass_the_courses_gradient_check(backend, lambd):
    """The fused step's cost and gradients with L2 (what every optimizer is fed) against
    the course's regularised cost, by gradient_check_n: difference < 2e-7 in float64."""
    from deepnet.course_tools import compute_cost_with_regularization
    from deepnet.gradient_check import gradient_check_n
    from deepnet.kernels import L_model_forward
    from deepnet.step import backward_above_input

    xp = backend.xp
    X, Y = (backend.asarray(a) for a in data(n_x=6, m=9, seed=4))
    P = on(backend, draw_parameters([6, 5, 3, 1], "he", 4))
    W1 = P["W1"]
    grads, G1, cost = backward_above_input(
        P, W1 @ X, Y, reg=Regularization(lambd), w1_squared=xp.sum(W1 * W1)
    )
    grads["dW1"] = G1 @ X.T + lambd / 9 * W1
    AL, _ = L_model_forward(X, P)
    want = float(compute_cost_with_regularization(AL, Y, P, lambd))
    assert float(cost) == pytest.approx(want, rel=1e-12)
    assert gradient_check_n(P, grads, X, Y, lambd=lambd) < 2e-7


def test_streamed_and_distributed_runs_take_the_optimizers(tmp_path):
    """The same optimizer state carried by the file-reading and the MPI sources."""
    import h5py

    from deepnet.distributed import fit_distributed
    from deepnet.streaming import fit_stream, make_synthetic

    path = make_synthetic(tmp_path / "s.h5", 60, seed=3, image_shape=(4, 4, 3)).path
    with h5py.File(path) as f:
        x, y = f["train_set_x"][:], f["train_set_y"][:]
    X, Y = x.reshape(len(x), -1).T / 255.0, y.reshape(1, -1).astype(np.float64)
    dims = [48, 5, 1]
    for make in (lambda: Adam(0.01, decay=Decay(0.2)), lambda: Momentum(0.05)):
        kw = dict(num_iterations=6, record_every=1)
        mini = dict(batch_size=16, seed=2)
        want = fit(X, Y, start(dims, X), optimizer=make(), **mini, **kw)
        got = fit_stream(path, start(dims, X), optimizer=make(), **mini, **kw)
        assert got.costs == want.costs
        full = fit(X, Y, start(dims, X), optimizer=make(), gram=False, **kw)
        streamed = fit_stream(path, start(dims, X), optimizer=make(), chunk_size=25, **kw)
        shared = fit_distributed(X, Y, start(dims, X), comm=None, optimizer=make(), **kw)
        for run in (streamed, shared):
            np.testing.assert_allclose(run.costs, full.costs, rtol=1e-12)
            for k, v in full.parameters.items():
                np.testing.assert_allclose(run.parameters[k], v, rtol=1e-9, atol=1e-13)
