"""The CUDA path against the CPU: same seed, same costs, same predictions (needs a GPU).

Every test here is marked ``cuda`` and skips, visibly and once per parameter set, where no
GPU is usable. ``scripts/gpu-check`` runs them on a GPU machine.

Three CUDA paths are compared with NumPy: ``graph`` (the fused step, captured as a CUDA
graph), ``fused`` (the same kernels launched one by one: DEEPNET_CUDA_GRAPHS=0) and
``generic`` (the Array API step on CuPy: DEEPNET_CUDA_FAST=0).
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import deepnet
from deepnet import cuda as fast
from deepnet.backend import cuda_available, cupy_module, to_device, to_numpy
from deepnet.initialization import draw_parameters
from deepnet.training import L_layer_model, TrainState, fit, like, train_step, two_layer_model

pytestmark = pytest.mark.cuda

PATHS = ["graph", "fused", "generic"]
MODELS = {
    "two_layer": (two_layer_model, (12288, 7, 1)),
    "L_layer": (L_layer_model, (12288, 20, 7, 5, 1)),
}
COST_RTOL = {"float64": 1e-6, "float32": 1e-3}


@pytest.fixture(scope="module")
def cp():
    if not cuda_available():
        pytest.skip("cuda parity: needs CuPy and a usable CUDA GPU (none here)")
    return cupy_module()


@pytest.fixture
def path(request, monkeypatch, cp):
    """Select one CUDA path for the test, with a clean step cache before and after."""
    name = request.param
    monkeypatch.setenv(fast.FAST_ENV, "0" if name == "generic" else "1")
    monkeypatch.setenv(fast.GRAPHS_ENV, "1" if name == "graph" else "0")
    fast.clear_cache()
    yield name
    fast.clear_cache()


@pytest.fixture
def defaults(monkeypatch):
    """The CUDA fast path and graphs on, whatever the environment says."""
    monkeypatch.delenv(fast.FAST_ENV, raising=False)
    monkeypatch.delenv(fast.GRAPHS_ENV, raising=False)


def load_split(path, split):
    with h5py.File(path, "r") as f:
        x = np.asarray(f[f"{split}_set_x"])
        y = np.asarray(f[f"{split}_set_y"])
    return x.reshape(x.shape[0], -1).T / 255.0, y.reshape(1, -1)


@pytest.fixture(scope="module")
def cat_data(real_data_dir):
    X, Y = load_split(real_data_dir / "train_catvnoncat.h5", "train")
    Xt, Yt = load_split(real_data_dir / "test_catvnoncat.h5", "test")
    return X, Y, Xt, Yt


_CPU_RUNS: dict = {}


def cpu_run(model, dtype, cat_data):
    """The CPU's course run for (model, dtype), computed once per session.

    The step-loop test compares with it too: fit() may reach the same numbers by another
    rounding order (its full-batch shortcuts agree with the plain loop to ~1e-12), far
    inside the 1e-6 asked of the GPU, and this spares a second 2500-iteration CPU run.
    """
    if (model, dtype) not in _CPU_RUNS:
        train, dims = MODELS[model]
        X, Y, Xt, Yt = cat_data
        params, costs = train(X, Y, dims, num_iterations=2500, device="cpu", dtype=dtype)
        preds = [to_numpy(deepnet.predict(x.astype(dtype), None, params)) for x in (X, Xt)]
        probs = [to_numpy(deepnet.predict_proba(x.astype(dtype), params)) for x in (X, Xt)]
        _CPU_RUNS[model, dtype] = (costs, preds, probs)
    return _CPU_RUNS[model, dtype]


def step_loop(X, Y, iterations=2500):
    """The L-layer course run as a bare train_step loop (what fit does without shortcuts)."""
    params = like(draw_parameters(MODELS["L_layer"][1], "lecun", 1), X)
    costs = []
    for i in range(iterations):
        params, cost = train_step(params, X, Y, 0.0075)
        if i % 100 == 0:
            costs.append(float(cost))
    return params, costs


def assert_same_outcome(costs, params, cpu, cat_data, dtype):
    cpu_costs, cpu_preds, cpu_probs = cpu
    X, _, Xt, _ = cat_data
    np.testing.assert_allclose(costs, cpu_costs, rtol=COST_RTOL[dtype], atol=0)
    for x, want, prob in zip((X, Xt), cpu_preds, cpu_probs, strict=True):
        got = to_numpy(deepnet.predict(to_device(x, "cuda", dtype), None, params))
        if dtype == "float64":
            np.testing.assert_array_equal(got, want)
        else:  # float32 may only disagree where the CPU itself is within 1e-3 of the threshold
            differ = got != want
            assert np.all(np.abs(prob[differ] - 0.5) < 1e-3), np.flatnonzero(differ)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("model", list(MODELS))
def test_real_data_training_matches_the_cpu(cp, defaults, dtype, model, cat_data):
    """The course's runs through the public functions, whatever path fit() takes."""
    train, dims = MODELS[model]
    X, Y, _, _ = cat_data
    params, costs = train(X, Y, dims, num_iterations=2500, device="cuda", dtype=dtype)
    assert all(isinstance(v, cp.ndarray) and v.dtype == dtype for v in params.values())
    assert_same_outcome(costs, params, cpu_run(model, dtype, cat_data), cat_data, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, indirect=True)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_real_data_step_loop_matches_the_cpu(cp, path, dtype, cat_data):
    """2500 train_step calls on the real data, on each CUDA path."""
    X, Y, _, _ = cat_data
    params, costs = step_loop(to_device(X, "cuda", dtype), to_device(Y, "cuda", dtype))
    assert fast.graph_active() == (path == "graph")
    assert_same_outcome(costs, params, cpu_run("L_layer", dtype, cat_data), cat_data, dtype)


def random_problem(dims, m, dtype, order="C", seed=0):
    rng = np.random.RandomState(seed)
    X = np.asarray(rng.rand(dims[0], m), dtype=dtype, order=order)
    Y = (rng.rand(1, m) > 0.5).astype(dtype)
    params = {k: v.astype(dtype) for k, v in draw_parameters(dims, "lecun", seed).items()}
    params = {k: v + rng.randn(*v.shape).astype(dtype) * 0.05 for k, v in params.items()}
    return params, X, Y


def on_gpu(cp, params, X, Y):
    return {k: cp.asarray(v) for k, v in params.items()}, cp.asarray(X), cp.asarray(Y)


STEP_TOL = {"float64": dict(rtol=1e-10, atol=1e-13), "float32": dict(rtol=2e-4, atol=1e-6)}
SHAPES = [((12288, 20, 7, 5, 1), 209), ((12288, 7, 1), 209), ((50, 1), 3), ((300, 40, 1), 2048)]


def _shape_id(value):
    return "x".join(map(str, value)) if isinstance(value, tuple) else f"m{value}"


@pytest.mark.parametrize(("dims", "m"), SHAPES, ids=_shape_id)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_cuda_train_step_matches_numpy_step(cp, defaults, dims, m, dtype, order):
    """Ten chained steps of cuda_train_step against NumPy's train_step: eager, capture, replay."""
    params, X, Y = random_problem(dims, m, dtype, order)
    gparams, gX, gY = on_gpu(cp, params, X, Y)
    before = {k: v.copy() for k, v in gparams.items()}
    fast.clear_cache()
    for i in range(10):
        params, cost = train_step(params, X, Y, 0.05)
        gparams_next, gcost = fast.cuda_train_step(gparams, gX, gY, 0.05)
        if i == 0:  # inputs untouched
            for k in before:
                np.testing.assert_array_equal(to_numpy(gparams[k]), to_numpy(before[k]))
        gparams = gparams_next
        assert isinstance(gcost, cp.ndarray) and gcost.shape == () and gcost.dtype == dtype
        np.testing.assert_allclose(to_numpy(gcost), cost, **STEP_TOL[dtype], err_msg=f"step {i}")
    assert list(gparams) == list(params)
    for k in params:
        assert gparams[k].dtype == dtype and gparams[k].shape == params[k].shape
        np.testing.assert_allclose(to_numpy(gparams[k]), params[k], **STEP_TOL[dtype], err_msg=k)
    assert fast.graph_active()  # the capture worked: the launch-cutting path is live
    fast.clear_cache()


def test_each_step_returns_its_own_buffers(cp, defaults):
    """fit() keeps earlier parameters (to hand back on divergence): later steps can't touch them."""
    params, X, Y = on_gpu(cp, *random_problem((64, 8, 1), 50, "float64"))
    fast.clear_cache()
    history = []
    for _ in range(6):
        params, cost = fast.cuda_train_step(params, X, Y, 0.1)
        history.append((params, {k: v.copy() for k, v in params.items()}, cost, cost.copy()))
    for live, frozen, cost, cost_copy in history:
        for k in live:
            np.testing.assert_array_equal(to_numpy(live[k]), to_numpy(frozen[k]))
        np.testing.assert_array_equal(to_numpy(cost), to_numpy(cost_copy))
    fast.clear_cache()


def test_train_step_dispatches_to_the_cuda_path(cp, defaults):
    """training.train_step on CuPy arrays takes the fused path (the hook is in place)."""
    params, X, Y = on_gpu(cp, *random_problem((64, 8, 1), 50, "float32"))
    fast.clear_cache()
    for _ in range(3):
        params, _ = train_step(params, X, Y, 0.1)
    assert fast.graph_active()
    # one flat buffer, the fused step's: W1 and b2 are disjoint views of one allocation
    assert params["W1"].data.mem.ptr == params["b2"].data.mem.ptr
    fast.clear_cache()


def test_a_non_default_stream(cp, defaults):
    params, X, Y = random_problem((100, 10, 1), 64, "float64")
    want = params
    for _ in range(5):
        want, want_cost = train_step(want, X, Y, 0.1)
    gparams, gX, gY = on_gpu(cp, params, X, Y)
    fast.clear_cache()
    with cp.cuda.Stream(non_blocking=True) as stream:
        for _ in range(5):
            gparams, gcost = fast.cuda_train_step(gparams, gX, gY, 0.1)
        stream.synchronize()
    np.testing.assert_allclose(to_numpy(gcost), want_cost, rtol=1e-10)
    np.testing.assert_allclose(to_numpy(gparams["W1"]), want["W1"], rtol=1e-10, atol=1e-14)
    fast.clear_cache()


@pytest.mark.parametrize("path", PATHS, indirect=True)
def test_mini_batch_fit_matches_the_cpu(cp, path):
    params, X, Y = random_problem((200, 12, 4, 1), 150, "float64")
    cpu = fit(X, Y, TrainState(params), learning_rate=0.05, num_iterations=30, batch_size=64)
    gparams, gX, gY = on_gpu(cp, params, X, Y)
    gpu = fit(gX, gY, TrainState(gparams), learning_rate=0.05, num_iterations=30, batch_size=64)
    np.testing.assert_allclose(gpu.costs, cpu.costs, rtol=1e-9)
    for k in cpu.parameters:
        np.testing.assert_allclose(to_numpy(gpu.parameters[k]), cpu.parameters[k], rtol=1e-9)


@pytest.mark.parametrize("path", PATHS, indirect=True)
def test_divergence_is_reported_as_on_the_cpu(cp, path):
    params, X, Y = random_problem((30, 6, 1), 40, "float64")
    params["W1"][0, 0] = np.nan
    gparams, gX, gY = on_gpu(cp, params, X, Y)
    with pytest.raises(deepnet.DivergenceError) as cpu_err:
        fit(X, Y, TrainState(params), learning_rate=0.1, num_iterations=5)
    with pytest.raises(deepnet.DivergenceError) as gpu_err:
        fit(gX, gY, TrainState(gparams), learning_rate=0.1, num_iterations=5)
    assert gpu_err.value.iteration == cpu_err.value.iteration
