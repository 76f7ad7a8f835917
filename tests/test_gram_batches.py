"""The mini-batch Gram source takes the ordinary mini-batch steps, to rounding, and resumes
bit for bit; fit picks it where it is valid and pays."""

from __future__ import annotations

import sys

import h5py
import numpy as np
import pytest

from cli_process import interrupt
from cli_process import run as run_cli
from course_files import write_data
from deepnet import gram_batches
from deepnet.backend import array_namespace, to_numpy
from deepnet.engine.sources import MemorySteps, batch_order, memory_source
from deepnet.errors import DivergenceError, InputError
from deepnet.gram_batches import GramBatchSteps, pays, supports, use
from deepnet.initialization import draw_parameters
from deepnet.optim import GradientDescent, state_on, state_to_host
from deepnet.training import TrainState, fit, like

CLOSE = dict(rtol=1e-11, atol=1e-13)


def data(n_x: int = 120, m: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(m, n_x)).T / 255.0  # column-major, like the course's data
    return X, (rng.random((1, m)) < 0.4).astype(np.float64)


def params_for(dims, X, seed: int = 1):
    return like(draw_parameters(dims, "lecun", seed), X)


def run(steps, iterations: int, start: int = 0) -> list[float]:
    return [float(steps.run(i)) for i in range(start, iterations)]


class DecayedL2:
    """Gradient descent with L2 (a decay of W) and a decaying rate: factored per batch."""

    name = "l2-test"
    keeps_input_update_linear = True
    factored_per_batch = True

    def __init__(self, lr: float, lambd: float = 0.5, m: int = 40) -> None:
        self.lr, self.lambd, self.m = lr, lambd, m

    def rate(self, iteration: int) -> float:
        return self.lr / (1.0 + 0.05 * iteration)

    def init_state(self, parameters):
        return {}

    def update(self, parameters, grads, state, iteration):
        lr, out = self.rate(iteration), {}
        for k, p in parameters.items():
            g = grads.get(f"d{k}")
            out[k] = p if g is None else (1 - lr * self.lambd / self.m) * p - lr * g
        return out, state

    def input_step(self, G1, state, iteration):
        lr = self.rate(iteration)
        return lr * G1, 1 - lr * self.lambd / self.m, state

    def config(self):
        return {"name": self.name}


class Momentum:
    """Heavy-ball momentum: linear in the gradients, but its velocity mixes batches."""

    name = "momentum-test"
    keeps_input_update_linear = True
    factored_per_batch = False

    def __init__(self, lr: float, beta: float = 0.9) -> None:
        self.lr, self.beta = lr, beta

    def init_state(self, parameters):
        xp = array_namespace(*parameters.values())
        return {k: xp.zeros_like(v) for k, v in parameters.items()}

    def update(self, parameters, grads, state, iteration):
        out, state = {}, dict(state)
        for k, p in parameters.items():
            g = grads.get(f"d{k}")
            if g is None:
                out[k] = p
                continue
            state[k] = self.beta * state[k] + g
            out[k] = p - self.lr * state[k]
        return out, state

    def input_step(self, G1, state, iteration):
        V = self.beta * state["H1"] if "H1" in state else G1 * 0.0
        state = {**state, "H1": V + G1}
        return self.lr * state["H1"], 1.0, state

    def config(self):
        return {"name": self.name}


class AdamLike(GradientDescent):
    """Declares neither flag: elementwise in dW1, so no Gram source may run it."""

    keeps_input_update_linear = False
    factored_per_batch = False


@pytest.mark.parametrize("batch", [8, 13])
@pytest.mark.parametrize("dims", [[120, 1], [120, 7, 1], [120, 20, 7, 5, 1]])
def test_same_steps_as_the_ordinary_mini_batch_step(backend, host, dims, batch):
    X64, Y64 = data()
    X, Y = backend.asarray(X64), backend.asarray(Y64)
    gd = GradientDescent(0.05)
    plain = MemorySteps(params_for(dims, X), X, Y, gd, batch_size=batch, seed=3)
    gram = GramBatchSteps(params_for(dims, X), X, Y, gd, batch_size=batch, seed=3)
    want, got = run(plain, 60), run(gram, 60)
    np.testing.assert_allclose(got, want, **CLOSE)
    assert want[-1] < want[0]  # it did train
    mine = gram.parameters()
    assert list(mine) == list(plain.parameters()) and backend.is_own(mine["W1"])
    for k, v in plain.parameters().items():
        np.testing.assert_allclose(host(mine[k]), host(v), **CLOSE, err_msg=k)


@pytest.mark.parametrize("make", [lambda: DecayedL2(0.05), lambda: Momentum(0.02)],
                         ids=["l2-decay", "momentum"])  # fmt: skip
def test_optimizers_drive_it_through_input_step(backend, host, make):
    X64, Y64 = data()
    X, Y = backend.asarray(X64), backend.asarray(Y64)
    dims = [120, 20, 7, 5, 1]
    plain = MemorySteps(params_for(dims, X), X, Y, make(), batch_size=8, seed=4)
    gram = GramBatchSteps(params_for(dims, X), X, Y, make(), batch_size=8, seed=4)
    want, got = run(plain, 40), run(gram, 40)
    np.testing.assert_allclose(got, want, **CLOSE)
    assert want[-1] < want[0]
    for k, v in plain.parameters().items():
        np.testing.assert_allclose(host(gram.parameters()[k]), host(v), **CLOSE, err_msg=k)


def test_fit_picks_it_for_mini_batches_and_matches_the_ordinary_step(monkeypatch):
    X, Y = data()
    chosen = []
    real = gram_batches.GramBatchSteps
    monkeypatch.setattr(gram_batches, "GramBatchSteps",
                        lambda *a, **k: chosen.append(1) or real(*a, **k))  # fmt: skip
    kw = dict(learning_rate=0.05, record_every=10, batch_size=16, seed=2, num_iterations=40)
    seen = []
    want = fit(X, Y, TrainState(params_for([120, 7, 1], X)), gram=False, **kw)
    assert not chosen
    got = fit(X, Y, TrainState(params_for([120, 7, 1], X)),
              callback=lambda state, cost: seen.append(state.parameters["W1"]), **kw)  # fmt: skip
    assert chosen == [1]
    assert any(k.startswith("gram.") for k in got.resume)
    np.testing.assert_allclose(got.costs, want.costs, **CLOSE)
    np.testing.assert_allclose(got.parameters["W1"], want.parameters["W1"], **CLOSE)
    assert len(seen) == 4
    fit(X, Y, TrainState(params_for([120, 7, 1], X)), gram=True, **{**kw, "num_iterations": 1})
    assert chosen == [1, 1]  # gram=True insists, even where one iteration does not pay


@pytest.mark.parametrize("optimizer", [GradientDescent(0.05), DecayedL2(0.05), Momentum(0.02)],
                         ids=["gd", "l2-decay", "momentum"])  # fmt: skip
def test_resume_through_fit_and_the_host_is_bit_identical(backend, optimizer):
    X64, Y64 = data()
    X, Y = backend.asarray(X64), backend.asarray(Y64)
    kw = dict(optimizer=optimizer, record_every=7, batch_size=16, seed=5, gram=True)
    whole = fit(X, Y, TrainState(params_for([120, 7, 1], X)), num_iterations=50, **kw)
    stops = iter([False] * 22 + [True])
    half = fit(X, Y, TrainState(params_for([120, 7, 1], X)), num_iterations=50,
               should_stop=lambda: next(stops), **kw)  # fmt: skip
    assert half.stopped_early and half.iteration == 23
    assert {"gram.P", "gram.H_sum", "gram.W1_start", "gram.alpha"} <= set(half.resume)
    # through the host, as a checkpoint carries it; gram=None continues on this source
    saved = TrainState(
        {k: to_numpy(v) for k, v in half.parameters.items()}, list(half.costs), half.iteration,
        resume=state_to_host(half.resume),
    )  # fmt: skip
    again = TrainState(like(saved.parameters, X), saved.costs, saved.iteration,
                       resume=state_on(saved.resume, X))  # fmt: skip
    resumed = fit(X, Y, again, num_iterations=50, **{**kw, "gram": None})
    assert resumed.costs == whole.costs
    for k, v in whole.parameters.items():
        assert np.array_equal(np.asarray(resumed.parameters[k]), np.asarray(v)), k


def test_divergence_keeps_the_ordinary_paths_parameters():
    X, Y = data()
    kw = dict(learning_rate=0.1, num_iterations=20, record_every=1, batch_size=16)
    errors = []
    for gram in (False, True):
        with pytest.raises(DivergenceError) as info, np.errstate(all="ignore"):
            fit(X * 1e150, Y, TrainState(params_for([120, 7, 1], X)), gram=gram, **kw)
        errors.append(info.value)
    assert errors[0].iteration == errors[1].iteration
    for k, v in errors[0].parameters.items():
        np.testing.assert_allclose(errors[1].parameters[k], v, rtol=1e-9, err_msg=k)


def test_float32_stays_close():
    X64, Y64 = data()
    X, Y = X64.astype(np.float32), Y64.astype(np.float32)
    gd = GradientDescent(0.05)
    plain = MemorySteps(params_for([120, 20, 7, 5, 1], X), X, Y, gd, batch_size=8, seed=3)
    gram = GramBatchSteps(params_for([120, 20, 7, 5, 1], X), X, Y, gd, batch_size=8, seed=3)
    np.testing.assert_allclose(run(gram, 40), run(plain, 40), rtol=1e-5)
    assert gram.parameters()["W1"].dtype == np.float32


def test_what_is_declined():
    X, Y = data()
    assert supports(GradientDescent(0.1)) and supports(Momentum(0.1))
    assert not supports(AdamLike(0.1))
    state = TrainState(params_for([120, 7, 1], X))
    source = memory_source(state.parameters, X, Y, AdamLike(0.1), batch_size=8,
                           iterations_left=100)  # fmt: skip
    assert type(source) is MemorySteps
    with pytest.raises(InputError, match="gram=True"):
        fit(X, Y, state, optimizer=AdamLike(0.1), num_iterations=2, batch_size=8, gram=True)
    # an ordinary run's optimizer state (n_x-wide) does not switch to the Gram source
    held = {"opt.W1": np.zeros((7, 120))}
    source = memory_source(state.parameters, X, Y, Momentum(0.1), batch_size=8,
                           iterations_left=100, resume=held)  # fmt: skip
    assert type(source) is MemorySteps


def test_use_decides_like_fit_should():
    X, gd = np.zeros((12288, 209)), GradientDescent(0.1)
    assert use(None, X, 64, 20, 100, gd)
    assert not use(None, X, 64, 20, 1, gd)
    assert not use(False, X, 64, 20, 100, gd)
    assert use(True, X, 64, 20, 1, gd)
    assert not use(None, X, 64, 20, 100, AdamLike(0.1))
    assert not use(None, np.zeros((100, 200)), 64, 20, 100, gd)  # m > n_x
    assert use(None, X, 64, 20, 1, gd, resume={"gram.P": 0})  # a Gram checkpoint continues


def test_pays_where_the_examples_fit_in_k():
    assert pays(209, 12288, 20, 64, 100)
    assert pays(209, 12288, 20, None, 100)
    assert not pays(209, 12288, 20, 64, 1)  # K not repaid by one iteration
    assert not pays(20000, 12288, 20, 64, 10_000)  # m > n_x: K larger than X
    assert not pays(0, 12288, 20, 64, 100)
    assert not pays(4000, 12288, 20, 1, 100, per_batch=False)  # P moved whole every batch


def test_batch_order_is_the_seeded_permutation():
    for seed, epoch, m in ((1, 0, 209), (3, 7, 40), (1, 123456, 64)):
        want = np.random.RandomState([seed, epoch]).permutation(m)
        got = batch_order(m, 16, seed, epoch)
        np.testing.assert_array_equal(np.concatenate(got), want)
        assert [len(b) for b in got[:-1]] == [16] * (len(got) - 1)


def load(root, split):
    with h5py.File(root / f"{split}_catvnoncat.h5", "r") as f:
        x, y = np.asarray(f[f"{split}_set_x"]), np.asarray(f[f"{split}_set_y"])
    return x.reshape(x.shape[0], -1).T / 255.0, y.reshape(1, -1).astype(np.float64)


def test_course_data_mini_batch_64_same_costs_and_accuracy(real_data_dir):
    from deepnet.kernels import accuracy, predict

    X, Y = load(real_data_dir, "train")
    Xt, Yt = load(real_data_dir, "test")
    dims = (12288, 20, 7, 5, 1)
    kw = dict(learning_rate=0.0075, num_iterations=300, batch_size=64, record_every=1)
    plain = fit(X, Y, TrainState(params_for(dims, X)), gram=False, **kw)
    gram = fit(X, Y, TrainState(params_for(dims, X)), **kw)
    assert any(k.startswith("gram.") for k in gram.resume)  # the default took it
    np.testing.assert_allclose(gram.costs, plain.costs, rtol=1e-12, atol=0)
    assert plain.costs[-1] < 0.6 * plain.costs[0]  # it did train
    p, q = plain.parameters, gram.parameters
    for Xs, Ys in ((X, Y), (Xt, Yt)):
        assert accuracy(predict(Xs, None, q), Ys) == accuracy(predict(Xs, None, p), Ys)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_cli_batch_64_sigint_and_resume_is_bit_identical(env, tmp_path):
    from deepnet.checkpoint import load_checkpoint
    from deepnet.model_io import load_model

    write_data(tmp_path / "data", m=100)
    env = {**env, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    args = ["--data", "data", "--layers", "12288,4,1", "--learning-rate", "0.01",
            "--batch-size", "64", "--record-every", "10", "--print-every", "0",
            "--checkpoint-every", "50", "--epochs", "3000"]  # fmt: skip

    train = [sys.executable, "-m", "deepnet.cli", "train"]
    run_cli([*train, *args, "--out", "ref.npz"], tmp_path, env)
    checkpoint = tmp_path / "run.ckpt.npz"
    code, err = interrupt([*train, *args, "--out", "run.npz"], checkpoint, tmp_path, env)
    assert code == 130, err
    saved = load_checkpoint(checkpoint)
    assert 50 <= saved.iteration < 3000
    assert "gram.H_sum" in saved.resume  # the run was on the mini-batch Gram source
    run_cli([*train, "--resume", "run.ckpt.npz"], tmp_path, env)  # asserts it exits 0
    a, b = load_model(tmp_path / "run.npz"), load_model(tmp_path / "ref.npz")
    assert a.costs == b.costs
    for key, value in b.parameters.items():
        np.testing.assert_array_equal(a.parameters[key], value, err_msg=key)


def test_other_hidden_activations():
    X, Y = data()
    kw = dict(learning_rate=0.05, record_every=5, batch_size=16, seed=2, num_iterations=30)
    for hidden in ("tanh", "sigmoid"):
        want = fit(X, Y, TrainState(params_for([120, 7, 1], X)), gram=False, hidden=hidden, **kw)
        got = fit(X, Y, TrainState(params_for([120, 7, 1], X)), gram=True, hidden=hidden, **kw)
        np.testing.assert_allclose(got.costs, want.costs, **CLOSE)
        np.testing.assert_allclose(got.parameters["W2"], want.parameters["W2"], **CLOSE)
