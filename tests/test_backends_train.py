"""Training on torch and JAX end to end: the data's device kept, float32 on the Gram path,
model files read on any backend, and ``deepnet train --backend``.

The library never turns on JAX's 64-bit mode; tests that need it use ``jax.enable_x64``
for their own duration, as the grid in conftest.py does.
"""

from __future__ import annotations

import contextlib
import re
from functools import cache

import numpy as np
import pytest

import deepnet
from deepnet import fastpath
from deepnet.backend import device_of, to_device, to_numpy
from deepnet.data import load_cat_data
from deepnet.model_io import PREPROCESSING, Model, load_model, save_model
from deepnet.training import prepare
from test_cli import deepnet as run_deepnet

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")

LAYERS = [12288, 20, 7, 5, 1]
PLACES = {"numpy": "cpu", "torch": "torch:cpu", "jax": "jax:cpu"}


def x64(library: str, dtype: str) -> contextlib.AbstractContextManager:
    """JAX's 64-bit mode for a float64 JAX test, nothing otherwise."""
    if library == "jax" and dtype == "float64":
        return jax.enable_x64(True)
    return contextlib.nullcontext()


def small_set(m: int = 40, n_x: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    X = rng.rand(n_x, m)
    return X, (X[:1] + X[1:2] > 1).astype(np.float64)


@pytest.mark.parametrize("library", ["torch", "jax"])
def test_prepare_keeps_the_device_and_casts_checked(library):
    X, Y = small_set()
    with x64(library, "float64"):
        Xd, Yd = to_device(X, PLACES[library]), to_device(Y, PLACES[library])
        X32, Y32 = prepare(Xd, Yd, None, "float32")
        assert device_of(X32) == device_of(Xd) and str(X32.dtype).endswith("float32")
        X64, _ = prepare(X, Y, None, "float64", backend=library)
        assert device_of(X64).startswith(library) and str(X64.dtype).endswith("float64")
    if library == "jax":  # 32-bit mode: a float64 request is refused, never narrowed
        with pytest.raises(deepnet.DeviceError, match="32-bit mode"):
            prepare(X, Y, None, "float64", backend="jax")


@pytest.mark.parametrize("library", ["torch", "jax"])
@pytest.mark.parametrize("batch_size", [None, 16])
def test_training_stays_on_the_tensors_device(library, batch_size):
    """Parameters, mini-batch indices and the Gram path all live where X lives."""
    X, Y = small_set()
    Xd, Yd = to_device(X, PLACES[library], "float32"), to_device(Y, PLACES[library], "float32")
    params, costs = deepnet.L_layer_model(
        Xd, Yd, [30, 5, 1], num_iterations=30, record_every=10, batch_size=batch_size,
        dtype="float32",
    )  # fmt: skip
    host, host_costs = deepnet.L_layer_model(
        X.astype(np.float32), Y.astype(np.float32), [30, 5, 1], num_iterations=30,
        record_every=10, batch_size=batch_size, dtype="float32",
    )  # fmt: skip
    assert all(device_of(p) == device_of(Xd) for p in params.values())
    np.testing.assert_allclose(costs, host_costs, rtol=1e-5)
    for k in host:
        np.testing.assert_allclose(to_numpy(params[k]), host[k], rtol=1e-4, atol=1e-6)


def test_take_columns_reads_torch_strides():
    from deepnet.engine.sources import column_major, take_columns

    X = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    T = torch.as_tensor(X)
    assert column_major(T) and not column_major(T.contiguous())
    cols = torch.tensor([3, 0])
    xp = deepnet.array_namespace(T)
    np.testing.assert_array_equal(to_numpy(take_columns(xp, T, cols)), X[:, [3, 0]])


@pytest.mark.parametrize("library", ["numpy", "torch", "jax"])
def test_gram_start_is_summed_in_float64(library):
    """float64: the plain products, bit for bit; float32: the float64 sums rounded once."""
    rng = np.random.RandomState(3)
    X, W1 = rng.rand(3000, 20), rng.randn(4, 3000) * 0.02
    with x64(library, "float64"):
        X64, W64 = to_device(X, PLACES[library]), to_device(W1, PLACES[library])
        assert np.array_equal(to_numpy(fastpath.gram_matrix(X64)), to_numpy(X64.T @ X64))
        P64 = to_numpy(fastpath.start_product(W64, X64))
        assert np.array_equal(P64, to_numpy(W64 @ X64))
    X32, W32 = to_device(X, PLACES[library], "float32"), to_device(W1, PLACES[library], "float32")
    exact = W1.astype(np.float32).astype(np.float64) @ X.astype(np.float32).astype(np.float64)
    P32 = to_numpy(fastpath.start_product(W32, X32))
    assert str(P32.dtype) == "float32" and device_of(fastpath.start_product(W32, X32)) == (
        device_of(X32)
    )
    np.testing.assert_array_equal(P32, exact.astype(np.float32))
    K = to_numpy(fastpath.gram_matrix(X32))
    Xr = X.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(K, (Xr.T @ Xr).astype(np.float32))


@cache
def course_run(
    data_dir: str, library: str, dtype: str, gram: bool, iterations: int, layers=tuple(LAYERS)
):
    """The course's run (L-layer, or two-layer for 3 sizes) on one library: costs every 100
    iterations, train and test accuracy."""
    d = load_cat_data(data_dir)
    place = PLACES[library]
    with x64(library, dtype):
        X, Y = to_device(d.train_x, place, dtype), to_device(d.train_y, place, dtype)
        model = deepnet.two_layer_model if len(layers) == 3 else deepnet.L_layer_model
        params, costs = model(X, Y, list(layers), num_iterations=iterations, gram=gram, dtype=dtype)
        scores = []
        for x, y in ((d.train_x, d.train_y), (d.test_x, d.test_y)):
            proba = to_numpy(deepnet.predict_proba(to_device(x, place, dtype), params))
            scores.append(float(np.mean((proba.reshape(-1) > 0.5) == y.reshape(-1))))
    return np.array(costs), *scores


def test_float32_gram_follows_the_ordinary_float32_step(real_data_dir):
    """Until the run's sensitive phase (~iteration 700) the Gram path in float32 tracks the
    step-by-step float32 costs to float32 rounding (summed in float32 it was 3% off at 300)."""
    gram, *_ = course_run(str(real_data_dir), "numpy", "float32", True, 400)
    plain, *_ = course_run(str(real_data_dir), "numpy", "float32", False, 400)
    np.testing.assert_allclose(gram, plain, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("layers", [tuple(LAYERS), (12288, 7, 1)], ids=["L-layer", "two-layer"])
@pytest.mark.parametrize("library", ["numpy", "torch", "jax"])
def test_float32_gives_the_course_accuracies(library, layers, real_data_dir):
    """The course's 2500-iteration runs in float32 (Gram path, as gram=None picks on the
    CPU) end at the float64 run's train and test accuracies, on every library."""
    root = str(real_data_dir)
    _, want_train, want_test = course_run(root, "numpy", "float64", True, 2500, layers)
    costs, train, test = course_run(root, library, "float32", True, 2500, layers)
    assert (train, test) == (want_train, want_test)
    assert costs[-1] < costs[0] / 5


@pytest.mark.parametrize(("trained_on", "read_on"), [
    ("torch", "jax"), ("torch", "numpy"), ("jax", "torch"), ("jax", "numpy"), ("numpy", "torch"),
])  # fmt: skip
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_model_files_load_on_any_backend(tmp_path, trained_on, read_on, dtype):
    X, Y = small_set()
    with x64(trained_on, dtype):
        Xd, Yd = to_device(X, PLACES[trained_on], dtype), to_device(Y, PLACES[trained_on], dtype)
        params, costs = deepnet.L_layer_model(Xd, Yd, [30, 5, 1], num_iterations=20, dtype=dtype)
        want = to_numpy(deepnet.predict_proba(Xd, params))
    shape = dict(PREPROCESSING, image_shape=[2, 5, 3])  # 30 inputs
    model = Model(params, [30, 5, 1], dtype=dtype, costs=costs, preprocessing=shape)
    path = save_model(model, tmp_path / "m.npz")
    model = load_model(path)
    with x64(read_on, dtype):
        on = model.parameters_on(PLACES[read_on])
        assert all(device_of(p).startswith(PLACES[read_on].split(":")[0]) for p in on.values())
        got = to_numpy(deepnet.predict_proba(to_device(X, PLACES[read_on], dtype), on))
    np.testing.assert_allclose(got, want, rtol=1e-12 if dtype == "float64" else 1e-5)


def accuracies(output: str) -> list[str]:
    return re.findall(r"(?:train|test) accuracy: (\S+)", output)


@pytest.mark.parametrize(("library", "dtype"), [("torch", "float64"), ("jax", "float64"),
                                                ("jax", "float32")])  # fmt: skip
def test_cli_trains_on_a_backend_and_numpy_evaluates(tmp_path, env, library, dtype):
    """``deepnet train --backend LIB`` runs the main job (short) and saves a model that
    ``deepnet evaluate`` reads with NumPy, to the same accuracies."""
    out = tmp_path / "model.npz"
    args = ["--synthetic", "-n", "100", "--dtype", dtype, "--no-progress", "--print-every", "0"]
    trained = run_deepnet("train", "--backend", library, *args, "--out", out, env=env)
    assert trained.returncode == 0, trained.stderr
    assert f"device: {library}:cpu" in trained.stdout
    evaluated = run_deepnet("evaluate", out, env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "device: cpu (NumPy)" in evaluated.stdout
    assert accuracies(evaluated.stdout) == accuracies(trained.stdout) != []


def test_cli_backend_from_the_environment_and_errors(env):
    info = run_deepnet("info", env=dict(env, DEEPNET_BACKEND="torch"))
    assert info.returncode == 0 and "device: torch:cpu (PyTorch" in info.stdout
    bad = run_deepnet("train", "--synthetic", "--backend", "tensorflow", env=env)
    assert bad.returncode != 0 and "unknown backend 'tensorflow'" in bad.stderr
    assert "Traceback" not in bad.stderr
    mpi = run_deepnet("train", "--synthetic", "--distributed", "--backend", "torch", env=env)
    assert mpi.returncode != 0 and "--distributed trains NumPy or CuPy" in mpi.stderr


@pytest.mark.parametrize("library", ["numpy", "torch", "jax"])
def test_minibatch_gram_source_runs_on_the_tensors_device(library):
    """gram_batches' index arrays and its one-hot scatter are made on X's device: its
    mini-batch steps follow the ordinary ones (float32 rounding apart)."""
    from deepnet.engine.sources import MemorySteps
    from deepnet.gram_batches import GramBatchSteps
    from deepnet.initialization import draw_parameters
    from deepnet.optim import GradientDescent
    from deepnet.training import like

    rng = np.random.RandomState(0)
    X, Y = rng.rand(500, 60), (rng.rand(1, 60) < 0.5) * 1.0
    host = draw_parameters([500, 6, 3, 1], "lecun", 1)
    Xd, Yd = to_device(X, PLACES[library], "float32"), to_device(Y, PLACES[library], "float32")
    gram = GramBatchSteps(like(host, Xd), Xd, Yd, 0.05, batch_size=16, seed=2)
    plain = MemorySteps(like(host, Xd), Xd, Yd, GradientDescent(0.05), batch_size=16, seed=2)
    costs = [(float(gram.run(i)), float(plain.run(i))) for i in range(5)]
    np.testing.assert_allclose(*zip(*costs, strict=True), rtol=1e-6)
    W1 = gram.parameters()["W1"]
    assert device_of(W1) == device_of(Xd)
    np.testing.assert_allclose(to_numpy(W1), to_numpy(plain.parameters()["W1"]), atol=1e-6)
