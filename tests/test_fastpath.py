"""The speed work keeps the numbers: the Gram path, the layout choice, and memory."""

from __future__ import annotations

import tracemalloc

import h5py
import numpy as np
import pytest

from deepnet.errors import DivergenceError
from deepnet.fastpath import use_gram
from deepnet.initialization import draw_parameters
from deepnet.step import input_gradient, input_product, is_column_major
from deepnet.training import L_layer_model, TrainState, fit, like, train_step, two_layer_model

CLOSE = dict(rtol=1e-11, atol=1e-13)


def data(n_x: int = 120, m: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(m, n_x)).T / 255.0  # column-major, like the course's data
    return X, (rng.random((1, m)) < 0.4).astype(np.float64)


def start(dims, X, seed: int = 1) -> TrainState:
    return TrainState(like(draw_parameters(dims, "lecun", seed), X))


@pytest.mark.parametrize("dims", [[120, 1], [120, 7, 1], [120, 20, 7, 5, 1]])
def test_gram_path_matches_direct_steps(backend, host, dims):
    X64, Y64 = data()
    X, Y = backend.asarray(X64), backend.asarray(Y64)
    kw = dict(learning_rate=0.05, num_iterations=250, record_every=10)
    direct = fit(X, Y, start(dims, X), gram=False, **kw)
    gram = fit(X, Y, start(dims, X), gram=True, **kw)
    assert backend.is_own(gram.parameters["W1"])
    assert list(gram.parameters) == list(direct.parameters)
    assert gram.iteration == direct.iteration == 250
    np.testing.assert_allclose(gram.costs, direct.costs, **CLOSE)
    assert direct.costs[-1] < direct.costs[0]  # it did train
    for k, v in direct.parameters.items():
        np.testing.assert_allclose(host(gram.parameters[k]), host(v), **CLOSE, err_msg=k)


def test_gram_path_in_float32_stays_close():
    X64, Y64 = data()
    X, Y = X64.astype(np.float32), Y64.astype(np.float32)
    kw = dict(learning_rate=0.05, num_iterations=200)
    direct = fit(X, Y, start([120, 7, 1], X), gram=False, **kw)
    gram = fit(X, Y, start([120, 7, 1], X), gram=True, **kw)
    assert gram.parameters["W1"].dtype == np.float32
    np.testing.assert_allclose(gram.costs, direct.costs, rtol=1e-5)


def test_gram_path_is_chosen_only_where_valid_and_paying():
    X = np.zeros((100, 40))
    assert use_gram(None, X, None, n1=7, iterations=100)
    assert use_gram(None, X, 40, n1=7, iterations=100)  # a batch of all m is full batch
    assert not use_gram(None, X, 16, n1=7, iterations=100)  # mini-batches
    assert not use_gram(None, X, None, n1=7, iterations=1)  # K would not be repaid
    assert not use_gram(None, np.zeros((30, 40)), None, n1=7, iterations=100)  # m > n_x
    assert not use_gram(False, X, None, n1=7, iterations=100)
    assert use_gram(True, np.zeros((30, 40)), None, n1=7, iterations=1)


def test_gram_true_with_mini_batches_takes_the_mini_batch_gram_source():
    X, Y = data()
    got = fit(X, Y, start([120, 7, 1], X), learning_rate=0.05, num_iterations=5, batch_size=8,
              gram=True)  # fmt: skip
    assert "gram.P" in got.resume  # deepnet.gram_batches (tests/test_gram_batches.py)


def test_gram_path_callback_sees_the_direct_parameters():
    X, Y = data()
    seen: dict[str, list] = {"gram": [], "direct": []}
    for name, gram in (("gram", True), ("direct", False)):

        def record(state, cost, name=name):
            seen[name].append((state.iteration, state.parameters))

        kw = dict(learning_rate=0.05, num_iterations=60, record_every=20)
        fit(X, Y, start([120, 7, 1], X), gram=gram, callback=record, **kw)
    assert [i for i, _ in seen["gram"]] == [i for i, _ in seen["direct"]] == [1, 21, 41]
    for (_, pg), (_, pd) in zip(seen["gram"], seen["direct"], strict=True):
        for k in pd:
            np.testing.assert_allclose(pg[k], pd[k], **CLOSE)


def test_gram_path_resumes_like_one_run():
    X, Y = data()
    kw = dict(learning_rate=0.05, gram=True)
    whole = fit(X, Y, start([120, 7, 1], X), num_iterations=300, **kw)
    half = fit(X, Y, start([120, 7, 1], X), num_iterations=150, **kw)
    resumed = fit(X, Y, half, num_iterations=300, **kw)
    np.testing.assert_allclose(resumed.costs, whole.costs, **CLOSE)
    np.testing.assert_allclose(resumed.parameters["W1"], whole.parameters["W1"], **CLOSE)


def test_gram_path_divergence_keeps_the_direct_paths_parameters():
    X, Y = data()
    errors = {}
    for gram in (True, False):
        # Pixels of 1e150 overflow the products (and K) after one step.
        with pytest.raises(DivergenceError) as info, np.errstate(all="ignore"):
            fit(X * 1e150, Y, start([120, 7, 1], X), learning_rate=0.1, num_iterations=20,
                record_every=1, gram=gram)  # fmt: skip
        errors[gram] = info.value
    assert errors[True].iteration == errors[False].iteration == 1
    assert errors[True].costs == pytest.approx(errors[False].costs, rel=1e-9)
    for k, v in errors[False].parameters.items():
        np.testing.assert_allclose(errors[True].parameters[k], v, rtol=1e-9, err_msg=k)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_train_step_same_result_for_both_layouts(dtype):
    X, Y = (a.astype(dtype) for a in data())
    tol = CLOSE if dtype == "float64" else dict(rtol=2e-6, atol=1e-7)
    params = like(draw_parameters([120, 7, 1], "lecun", 1), X)
    row_major = np.ascontiguousarray(X)
    assert is_column_major(X) and not is_column_major(row_major)
    np.testing.assert_allclose(input_product(params["W1"], X), params["W1"] @ row_major, **tol)
    G = np.random.RandomState(2).randn(params["W1"].shape[0], X.shape[1]).astype(dtype)
    exact = G.astype(np.float64) @ X.astype(np.float64).T  # sums with cancellation: scale atol
    for layout in (X, row_major):
        dW1 = input_gradient(G, layout)
        assert dW1.dtype == X.dtype and dW1.flags["C_CONTIGUOUS"]  # the update's one layout
        np.testing.assert_allclose(
            dW1, exact, rtol=tol["rtol"], atol=tol["rtol"] * 10 * abs(exact).max()
        )
    a, cost_a = train_step(params, X, Y, 0.05)
    b, cost_b = train_step(params, row_major, Y, 0.05)
    assert float(cost_a) == pytest.approx(float(cost_b), rel=tol["rtol"])
    for k in a:
        assert a[k].dtype == X.dtype
        np.testing.assert_allclose(a[k], b[k], **tol)


def traced_peak(run) -> int:
    """The peak of Python-traced memory during a second ``run()``: the first one imports
    what deepnet imports lazily (threadpoolctl, ...), which is not the run's memory."""
    run()
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("column_major", [True, False])
def test_train_step_does_not_copy_x(column_major):
    X, Y = data(n_x=4096, m=64)
    X = X if column_major else np.ascontiguousarray(X)
    params = like(draw_parameters([4096, 4, 1], "lecun", 1), X)
    # What a step must allocate: a few W1-sized arrays (4 x 4096), far below one X (4096 x 64).
    assert traced_peak(lambda: train_step(params, X, Y, 0.01)) < X.nbytes / 4


@pytest.mark.parametrize("gram", [True, False])
def test_training_run_memory_stays_below_x(gram):
    X, Y = data(n_x=4096, m=64)
    peak = traced_peak(
        lambda: L_layer_model(X, Y, [4096, 4, 3, 1], 0.01, 30, dtype="float64", gram=gram)
    )
    assert peak < X.nbytes / 2  # X itself is the caller's; training adds less than half of it


def load(root, split):
    with h5py.File(root / f"{split}_catvnoncat.h5", "r") as f:
        x, y = np.asarray(f[f"{split}_set_x"]), np.asarray(f[f"{split}_set_y"])
    return x.reshape(x.shape[0], -1).T / 255.0, y.reshape(1, -1).astype(np.float64)


def accuracy_of(params, X, Y):
    from deepnet.kernels import accuracy, predict

    return accuracy(predict(X, None, params), Y)


def test_gram_path_reproduces_the_course_training_table(real_data_dir):
    X, Y = load(real_data_dir, "train")
    Xt, Yt = load(real_data_dir, "test")
    params, costs = two_layer_model(X, Y, (12288, 7, 1), num_iterations=2500, gram=True)
    assert costs[0] == pytest.approx(0.6930497356599888, rel=1e-9)
    assert costs[1] == pytest.approx(0.6464320953428849, rel=1e-9)
    assert costs[24] == pytest.approx(0.048554785628770206, rel=1e-9)
    assert accuracy_of(params, X, Y) == 1.0 and accuracy_of(params, Xt, Yt) == 0.72
    params, costs = L_layer_model(X, Y, (12288, 20, 7, 5, 1), num_iterations=2500, gram=True)
    assert [round(costs[i], 6) for i in (0, 1, 24)] == [0.771749, 0.672053, 0.092878]
    assert accuracy_of(params, X, Y) == pytest.approx(0.985645933014, abs=1e-12)
    assert accuracy_of(params, Xt, Yt) == 0.8
