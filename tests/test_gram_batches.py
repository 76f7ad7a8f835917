"""The mini-batch Gram source takes the ordinary mini-batch steps, to rounding."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from deepnet.backend import array_namespace
from deepnet.errors import DivergenceError, InputError
from deepnet.gram_batches import GramBatchState, GramBatchSteps, Span, pays, supports, use
from deepnet.initialization import draw_parameters
from deepnet.step import backward_above_input
from deepnet.training import TrainState, _PlainSteps, batch_order, fit, like, take_columns

CLOSE = dict(rtol=1e-11, atol=1e-13)


def data(n_x: int = 120, m: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(m, n_x)).T / 255.0  # column-major, like the course's data
    return X, (rng.random((1, m)) < 0.4).astype(np.float64)


def params_for(dims, X, seed: int = 1):
    return like(draw_parameters(dims, "lecun", seed), X)


def run(steps, iterations: int, start: int = 0) -> list[float]:
    return [float(steps.run(i)) for i in range(start, iterations)]


@pytest.mark.parametrize("batch", [8, 13, None])
@pytest.mark.parametrize("dims", [[120, 1], [120, 7, 1], [120, 20, 7, 5, 1]])
def test_same_steps_as_the_ordinary_mini_batch_step(backend, host, dims, batch):
    X64, Y64 = data()
    X, Y = backend.asarray(X64), backend.asarray(Y64)
    plain = _PlainSteps(params_for(dims, X), X, Y, 0.05, batch, seed=3)
    gram = GramBatchSteps(params_for(dims, X), X, Y, 0.05, batch, seed=3)
    want, got = run(plain, 60), run(gram, 60)
    np.testing.assert_allclose(got, want, **CLOSE)
    assert want[-1] < want[0]  # it did train
    mine = gram.parameters()
    assert list(mine) == list(plain.parameters()) and backend.is_own(mine["W1"])
    for k, v in plain.parameters().items():
        np.testing.assert_allclose(host(mine[k]), host(v), **CLOSE, err_msg=k)


@pytest.fixture
def fit_on_gram_batches(monkeypatch):
    """fit with its mini-batch source replaced by this one: the plug-in engine will make."""
    import deepnet.training as training

    monkeypatch.setattr(training, "_PlainSteps", GramBatchSteps)
    return fit


def test_inside_fit_with_callbacks_and_resume(fit_on_gram_batches):
    X, Y = data()
    kw = dict(learning_rate=0.05, record_every=10, batch_size=16, seed=2, gram=False)
    seen = []
    want = fit(X, Y, TrainState(params_for([120, 7, 1], X)), num_iterations=40, **kw)
    got = fit_on_gram_batches(
        X, Y, TrainState(params_for([120, 7, 1], X)), num_iterations=40,
        callback=lambda state, cost: seen.append(state.parameters["W1"]), **kw,
    )  # fmt: skip
    np.testing.assert_allclose(got.costs, want.costs, **CLOSE)
    np.testing.assert_allclose(got.parameters["W1"], want.parameters["W1"], **CLOSE)
    assert len(seen) == 4
    half = fit_on_gram_batches(X, Y, TrainState(params_for([120, 7, 1], X)),
                               num_iterations=20, **kw)  # fmt: skip
    rest = fit_on_gram_batches(X, Y, half, num_iterations=40, **kw)
    np.testing.assert_allclose(rest.costs, want.costs, **CLOSE)


def test_divergence_keeps_the_ordinary_paths_parameters(fit_on_gram_batches):
    X, Y = data()
    kw = dict(learning_rate=0.1, num_iterations=20, record_every=1, batch_size=16, gram=False)
    errors = []
    for run_fit in (fit, fit_on_gram_batches):
        with pytest.raises(DivergenceError) as info, np.errstate(all="ignore"):
            run_fit(X * 1e150, Y, TrainState(params_for([120, 7, 1], X)), **kw)
        errors.append(info.value)
    assert errors[0].iteration == errors[1].iteration
    for k, v in errors[0].parameters.items():
        np.testing.assert_allclose(errors[1].parameters[k], v, rtol=1e-9, err_msg=k)


def test_float32_stays_close():
    X64, Y64 = data()
    X, Y = X64.astype(np.float32), Y64.astype(np.float32)
    plain = _PlainSteps(params_for([120, 20, 7, 5, 1], X), X, Y, 0.05, 8, seed=3)
    gram = GramBatchSteps(params_for([120, 20, 7, 5, 1], X), X, Y, 0.05, 8, seed=3)
    np.testing.assert_allclose(run(gram, 40), run(plain, 40), rtol=1e-5)
    assert gram.parameters()["W1"].dtype == np.float32


class Momentum:
    """Momentum with L2 and a decaying rate, written with plain arithmetic only."""

    linear_in_gradients = True

    def __init__(self, lr: float, beta: float = 0.9, lambd: float = 0.7, m: int = 40) -> None:
        self.lr, self.beta, self.lambd, self.m = lr, beta, lambd, m

    def init(self, parameters):
        zero = lambda p: p.zeros_like() if isinstance(p, Span) else 0.0 * p  # noqa: E731
        return {k: zero(p) for k, p in parameters.items()}

    def update(self, parameters, grads, state, step):
        lr = self.lr / (1.0 + 0.01 * step)
        new, velocity = {}, {}
        for k, p in parameters.items():
            g = grads[k] + (self.lambd / self.m) * p
            velocity[k] = self.beta * state[k] + (1 - self.beta) * g
            new[k] = p - lr * velocity[k]
        return new, velocity


def ordinary_with(optimizer, params, X, Y, batch, seed, iterations):
    """The ordinary mini-batch loop (dW1 = G @ X_B.T) under any optimizer."""
    xp, m = array_namespace(X), X.shape[1]
    state, costs, step = optimizer.init(params), [], 0
    for i in range(iterations):
        cost = 0.0
        for idx in batch_order(m, batch, seed, i):
            cols = xp.asarray(idx)
            Xb, Yb = take_columns(xp, X, cols), xp.take(Y, cols, axis=1)
            grads, G, c = backward_above_input({**params}, params["W1"] @ Xb, Yb)
            grads = {k[1:]: g for k, g in grads.items()}
            grads["W1"] = G @ Xb.T
            params, state = optimizer.update(params, grads, state, step)
            step += 1
            cost = cost + c * (len(idx) / m)
        costs.append(float(cost))
    return params, costs


class PlainMomentum(Momentum):
    def init(self, parameters):
        return {k: 0.0 * p for k, p in parameters.items()}


def test_momentum_l2_and_decay_drive_it(backend, host):
    X64, Y64 = data()
    X, Y = backend.asarray(X64), backend.asarray(Y64)
    dims = [120, 20, 7, 5, 1]
    want_params, want = ordinary_with(PlainMomentum(0.05), params_for(dims, X), X, Y, 8, 4, 40)
    gram = GramBatchSteps(params_for(dims, X), X, Y, 0.05, 8, seed=4, optimizer=Momentum(0.05))
    np.testing.assert_allclose(run(gram, 40), want, **CLOSE)
    for k, v in want_params.items():
        np.testing.assert_allclose(host(gram.parameters()[k]), host(v), **CLOSE, err_msg=k)


def copy_tree(tree):
    if isinstance(tree, dict):
        return {k: copy_tree(v) for k, v in tree.items()}
    return np.array(tree) if isinstance(tree, np.ndarray) else tree


@pytest.mark.parametrize("optimizer", [None, Momentum(0.05)], ids=["sgd", "momentum"])
def test_resume_is_bit_identical(optimizer):
    X, Y = data()
    whole = GramBatchSteps(params_for([120, 7, 1], X), X, Y, 0.05, 16, 5, optimizer)
    want = run(whole, 30)
    half = GramBatchSteps(params_for([120, 7, 1], X), X, Y, 0.05, 16, 5, optimizer)
    first = run(half, 15)
    # Through copies, as a checkpoint file would store and load it.
    saved = half.state()
    saved = GramBatchState(
        np.array(saved.W1_start), copy_tree(saved.W1), copy_tree(saved.rest),
        copy_tree(saved.optimizer), saved.steps,
    )  # fmt: skip
    resumed = GramBatchSteps({}, X, Y, 0.05, 16, 5, optimizer, resume=saved)
    assert first + run(resumed, 30, start=15) == want
    for k, v in whole.parameters().items():
        np.testing.assert_array_equal(resumed.parameters()[k], v, err_msg=k)


def test_spans_refuse_what_is_not_linear():
    X, Y = data()
    steps = GramBatchSteps(params_for([120, 7, 1], X), X, Y, 0.05, 16)
    W1 = steps.W1
    with pytest.raises(TypeError):
        W1 * W1  # noqa: B018  (Adam squares its gradients: not linear)
    with pytest.raises(TypeError):
        W1 + 1.0  # noqa: B018
    assert not supports(type("Adam", (), {})())
    assert not supports(None, input_dropout=True)
    assert supports(None) and supports(Momentum(0.1))


def test_use_decides_like_fit_should():
    X = np.zeros((12288, 209))
    assert use(None, X, 64, 20, 100)
    assert not use(None, X, 64, 20, 1)
    assert not use(False, X, 64, 20, 100)
    assert use(True, X, 64, 20, 1)
    assert not use(None, X, 64, 20, 100, type("Adam", (), {})())
    with pytest.raises(InputError, match="linear in the gradients"):
        use(True, X, 64, 20, 100, input_dropout=True)


def test_pays_where_the_examples_fit_in_k():
    assert pays(209, 12288, 20, 64, 100)
    assert pays(209, 12288, 20, None, 100)
    assert not pays(209, 12288, 20, 64, 1)  # K not repaid by one iteration
    assert not pays(20000, 12288, 20, 64, 10_000)  # m > n_x: K larger than X
    assert not pays(0, 12288, 20, 64, 100)


def load(root, split):
    with h5py.File(root / f"{split}_catvnoncat.h5", "r") as f:
        x, y = np.asarray(f[f"{split}_set_x"]), np.asarray(f[f"{split}_set_y"])
    return x.reshape(x.shape[0], -1).T / 255.0, y.reshape(1, -1).astype(np.float64)


def test_course_data_mini_batch_64_same_costs_and_accuracy(real_data_dir):
    from deepnet.kernels import accuracy, predict

    X, Y = load(real_data_dir, "train")
    Xt, Yt = load(real_data_dir, "test")
    dims, iterations = (12288, 20, 7, 5, 1), 300
    plain = _PlainSteps(params_for(dims, X), X, Y, 0.0075, 64, seed=1)
    gram = GramBatchSteps(params_for(dims, X), X, Y, 0.0075, 64, seed=1)
    want, got = run(plain, iterations), run(gram, iterations)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    assert want[-1] < 0.6 * want[0]  # it did train
    p, q = plain.parameters(), gram.parameters()
    for Xs, Ys in ((X, Y), (Xt, Yt)):
        assert accuracy(predict(Xs, None, q), Ys) == accuracy(predict(Xs, None, p), Ys)
