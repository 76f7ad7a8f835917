"""The training loops: the course's real-data table, and behaviour on small problems."""

from __future__ import annotations

import numpy as np
import pytest

import deepnet
from deepnet.data import load_dataset
from deepnet.training import L_layer_model, two_layer_model

# Every "Cost after iteration i" the seed prints (two-layer at full precision, L-layer to 6).
TWO_LAYER_COSTS = [
    0.6930497356599888, 0.6464320953428849, 0.6325140647912678, 0.6015024920354665,
    0.5601966311605748, 0.515830477276473, 0.4754901313943325, 0.43391631512257495,
    0.4007977536203886, 0.35807050113237987, 0.3394281538366413, 0.30527536361962654,
    0.2749137728213015, 0.24681768210614827, 0.1985073503746611, 0.17448318112556593,
    0.1708076297809661, 0.11306524562164737, 0.09629426845937163, 0.08342617959726878,
    0.0743907870431909, 0.06630748132267938, 0.05919329501038176, 0.05336140348560564,
    0.048554785628770206,
]  # fmt: skip
L_LAYER_COSTS = [
    0.771749, 0.672053, 0.648263, 0.611507, 0.567047, 0.540138, 0.527930, 0.465477, 0.369126,
    0.391747, 0.315187, 0.272700, 0.237419, 0.199601, 0.189263, 0.161189, 0.148214, 0.137775,
    0.129740, 0.121225, 0.113821, 0.107839, 0.102855, 0.100897, 0.092878,
]  # fmt: skip


@pytest.fixture(scope="module")
def cat_data(real_data_dir):
    data = load_dataset(real_data_dir)
    return data.train_x, data.train_y, data.test_x, data.test_y


def accuracy_of(params, X, Y):
    return deepnet.accuracy(deepnet.predict(X, Y, params), Y)


@pytest.mark.slow
def test_two_layer_model_reproduces_the_course(cat_data):
    X, Y, Xt, Yt = cat_data
    params, costs = two_layer_model(X, Y, (12288, 7, 1), num_iterations=2500)
    np.testing.assert_allclose(costs, TWO_LAYER_COSTS, rtol=1e-9, atol=0)
    assert accuracy_of(params, X, Y) == 1.0
    assert accuracy_of(params, Xt, Yt) == 0.72


@pytest.mark.slow
def test_L_layer_model_reproduces_the_course(cat_data):
    X, Y, Xt, Yt = cat_data
    params, costs = L_layer_model(X, Y, (12288, 20, 7, 5, 1), num_iterations=2500)
    np.testing.assert_allclose(costs, L_LAYER_COSTS, rtol=0, atol=5e-7)
    assert accuracy_of(params, X, Y) == 206 / 209  # the course's 0.985645933014
    assert accuracy_of(params, Xt, Yt) == 0.8


def toy(m=60, n=8, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.rand(n, m)
    Y = (X[:1] + X[1:2] > 1.0).astype(np.int64)  # learnable from the first two features
    return X, Y


def test_costs_recorded_every_100_iterations_from_0():
    X, Y = toy()
    _, costs = L_layer_model(X, Y, [8, 4, 1], learning_rate=0.5, num_iterations=450)
    assert len(costs) == 5  # iterations 0, 100, 200, 300, 400
    assert costs[-1] < costs[0]


def test_record_every_and_callback():
    X, Y = toy()
    seen = []
    _, costs = L_layer_model(
        X, Y, [8, 4, 1], num_iterations=30, record_every=10,
        callback=lambda state, cost: seen.append((state.iteration, cost)),
    )  # fmt: skip
    assert [i for i, _ in seen] == [1, 11, 21]  # state.iteration is the next one to run
    assert [c for _, c in seen] == costs


def test_first_cost_is_the_cost_of_the_initial_parameters():
    X, Y = toy()
    _, costs = two_layer_model(X, Y, (8, 3, 1), num_iterations=1)
    p0 = deepnet.initialize_parameters(8, 3, 1, seed=1)
    AL, _ = deepnet.L_model_forward(X, p0)
    assert costs[0] == pytest.approx(float(deepnet.compute_cost(AL, Y)), rel=1e-12)


def test_float32_stays_float32():
    X, Y = toy()
    params, costs = L_layer_model(X, Y, [8, 4, 1], num_iterations=101, dtype="float32")
    assert all(v.dtype == np.float32 for v in params.values())
    _, costs64 = L_layer_model(X, Y, [8, 4, 1], num_iterations=101)
    np.testing.assert_allclose(costs, costs64, rtol=1e-4)


def test_mini_batches_are_seeded_and_learn():
    X, Y = toy(m=90)
    kw = dict(learning_rate=0.3, num_iterations=201, batch_size=32)
    p1, c1 = L_layer_model(X, Y, [8, 4, 1], **kw)
    p2, c2 = L_layer_model(X, Y, [8, 4, 1], **kw)
    p3, c3 = L_layer_model(X, Y, [8, 4, 1], **kw, seed=2)
    assert c1 == c2 and c1 != c3
    assert c1[-1] < c1[0]
    full = L_layer_model(X, Y, [8, 4, 1], learning_rate=0.3, num_iterations=201)[1]
    assert c1 != full


def test_training_runs_on_array_api_strict():
    strict = pytest.importorskip("array_api_strict")
    X, Y = toy()
    Xs, Ys = strict.asarray(X), strict.asarray(Y.astype(np.float64))
    params, costs = L_layer_model(Xs, Ys, [8, 4, 1], num_iterations=201)
    assert all(type(v).__module__.startswith("array_api_strict") for v in params.values())
    _, costs_np = L_layer_model(X, Y, [8, 4, 1], num_iterations=201)
    np.testing.assert_allclose(costs, costs_np, rtol=1e-12)


def test_divergence_stops_with_the_iteration_and_keeps_finite_parameters():
    X, Y = toy()
    with pytest.raises(deepnet.DivergenceError, match="iteration") as info:
        L_layer_model(X * 1e100, Y, [8, 1], learning_rate=1e250, num_iterations=50,
                      record_every=1)  # fmt: skip
    err = info.value
    assert err.iteration >= 1
    assert all(np.all(np.isfinite(v)) for v in err.parameters.values())
    assert len(err.costs) == err.iteration


@pytest.mark.parametrize("batch_size", [None, 16])
def test_stopping_and_resuming_gives_the_uninterrupted_result(batch_size):
    from deepnet.initialization import draw_parameters
    from deepnet.training import TrainState, fit, like

    X, Y = toy()
    Y = Y.astype(np.float64)
    kw = dict(learning_rate=0.3, num_iterations=250, batch_size=batch_size, record_every=10)
    start = TrainState(like(draw_parameters([8, 4, 1], "lecun", 1), X))
    full = fit(X, Y, start, **kw)

    checkpoints = []
    calls = iter(range(10**6))
    stopped = fit(
        X, Y, start, **kw, checkpoint_every=50, on_checkpoint=checkpoints.append,
        should_stop=lambda: next(calls) == 122,  # "Ctrl-C" after iteration 122
    )  # fmt: skip
    assert stopped.stopped_early and stopped.iteration == 123
    assert [c.iteration for c in checkpoints] == [50, 100]
    resumed = fit(X, Y, stopped, **kw)
    assert not resumed.stopped_early and resumed.iteration == 250
    assert resumed.costs == full.costs
    for key, value in full.parameters.items():
        np.testing.assert_array_equal(resumed.parameters[key], value)
    from_checkpoint = fit(X, Y, checkpoints[-1], **kw)
    assert from_checkpoint.costs == full.costs


@pytest.mark.parametrize("order", ["C", "F"])
def test_take_columns_gives_the_same_batch_in_either_layout(order):
    from deepnet.training import take_columns

    X = np.asarray(np.random.RandomState(0).rand(6, 10), order=order)
    cols = np.array([7, 2, 9])
    np.testing.assert_array_equal(take_columns(np, X, cols), X[:, cols])
