"""The engine's seams: the network spec, the optimizer, the one loop's resume and divergence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepnet import kernels
from deepnet.engine.fit import DIVERGENCE_FACTOR, TrainState
from deepnet.engine.sources import MemorySteps, cuda_supports, memory_source
from deepnet.errors import DivergenceError, InputError
from deepnet.fastpath import GramSteps
from deepnet.initialization import draw_parameters
from deepnet.optim import GradientDescent, gd_update
from deepnet.spec import ACTIVATIONS, HIDDEN_ACTIVATIONS, Network, network_from_activations
from deepnet.step import optimizer_step
from deepnet.training import fit, like


def data(n_x: int = 60, m: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(m, n_x)).T / 255.0
    return X, (rng.random((1, m)) < 0.4).astype(np.float64)


def start(dims, X) -> TrainState:
    return TrainState(like(draw_parameters(dims, "lecun", 1), X))


class SlowGD(GradientDescent):
    """Gradient descent that forms dW1 (as Adam must): the Gram path has to decline it."""

    keeps_input_update_linear = False


# ------------------------------------------------------------------------------ the spec


@pytest.mark.parametrize("hidden", HIDDEN_ACTIVATIONS)
def test_fused_step_matches_the_course_backward_for_every_hidden_activation(hidden):
    X, Y = data()
    params = draw_parameters([60, 5, 4, 1], "lecun", 2)
    AL, caches = kernels.L_model_forward(X, params, hidden=hidden)
    grads = kernels.L_model_backward(AL, Y, caches, hidden=hidden)
    want = gd_update(params, grads, 0.1)
    got, cost, _ = optimizer_step(params, X, Y, GradientDescent(0.1), {}, 0, hidden)
    assert float(cost) == pytest.approx(float(kernels.compute_cost(AL, Y)), rel=1e-12)
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-10, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("hidden", HIDDEN_ACTIVATIONS)
def test_activation_derivative_is_the_numerical_one(hidden):
    act = ACTIVATIONS[hidden]
    Z = np.linspace(-3, 3, 13) + 0.05  # away from relu's kink at 0
    h = 1e-6
    numeric = (act.forward(Z + h) - act.forward(Z - h)) / (2 * h)
    ones = np.ones_like(Z)
    np.testing.assert_allclose(act.from_z(ones, Z), numeric, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(act.from_a(ones, act.forward(Z)), act.from_z(ones, Z), rtol=1e-12)


def test_network_refuses_what_it_cannot_train():
    with pytest.raises(InputError, match="hidden activation"):
        Network((4, 3, 1), hidden="swish")
    with pytest.raises(InputError, match="output activation"):
        Network((4, 3, 1), output="tanh")
    with pytest.raises(InputError, match="init"):
        Network((4, 3, 1), init="xavier")
    net = Network([4, 3, 2, 1], hidden="tanh")
    assert net.activations == ["tanh", "tanh", "sigmoid"]
    assert network_from_activations([4, 3, 2, 1], net.activations) == Network((4, 3, 2, 1), "tanh")
    assert network_from_activations([4, 3, 1], ["relu", "tanh"]) is None


def test_fit_trains_a_tanh_network_and_matches_the_course_functions():
    X, Y = data()
    got = fit(X, Y, start([60, 5, 1], X), learning_rate=0.1, num_iterations=3, hidden="tanh")
    params = draw_parameters([60, 5, 1], "lecun", 1)
    for _ in range(3):
        AL, caches = kernels.L_model_forward(X, params, hidden="tanh")
        params = kernels.update_parameters(
            params, kernels.L_model_backward(AL, Y, caches, hidden="tanh"), 0.1
        )
    for k, v in params.items():
        np.testing.assert_allclose(got.parameters[k], v, rtol=1e-10, err_msg=k)


# ------------------------------------------------------------------------------ the optimizer


def test_fast_paths_say_what_they_support():
    assert cuda_supports("relu", GradientDescent(0.1))
    assert not cuda_supports("tanh", GradientDescent(0.1))
    assert not cuda_supports("relu", SlowGD(0.1))
    X, Y = data(m=20)
    params = like(draw_parameters([60, 4, 1], "lecun", 1), X)
    kw = dict(iterations_left=100)
    assert isinstance(memory_source(params, X, Y, GradientDescent(0.1), **kw), GramSteps)
    assert isinstance(memory_source(params, X, Y, SlowGD(0.1), **kw), MemorySteps)
    with pytest.raises(InputError, match="Gram path cannot run"):
        memory_source(params, X, Y, SlowGD(0.1), gram=True, **kw)


def test_an_optimizer_the_gram_path_declines_still_gives_the_same_run():
    X, Y = data()
    gd = fit(X, Y, start([60, 5, 1], X), learning_rate=0.1, num_iterations=40, gram=True)
    slow = fit(X, Y, start([60, 5, 1], X), optimizer=SlowGD(0.1), num_iterations=40)
    np.testing.assert_allclose(slow.costs, gd.costs, rtol=1e-11)
    with pytest.raises(InputError, match="not both"):
        fit(X, Y, start([60, 5, 1], X), learning_rate=0.2, optimizer=SlowGD(0.1), num_iterations=1)
    with pytest.raises(InputError):
        fit(X, Y, start([60, 5, 1], X), learning_rate=True, num_iterations=1)


# ------------------------------------------------------------------------------ the loop


@pytest.mark.parametrize("gram", [True, False])
@pytest.mark.parametrize("batch_size", [None, 8])
def test_resume_is_bit_identical(gram, batch_size):
    X, Y = data()
    kw = dict(learning_rate=0.05, gram=gram, batch_size=batch_size, record_every=7)
    whole = fit(X, Y, start([60, 7, 1], X), num_iterations=90, **kw)
    stops = iter([False] * 36 + [True])
    half = fit(X, Y, start([60, 7, 1], X), num_iterations=90, should_stop=lambda: next(stops), **kw)
    assert half.stopped_early and half.iteration == 37
    assert any(k.startswith("gram.") for k in half.resume) == gram
    # through the host, as a checkpoint carries it
    host = TrainState(
        {k: np.array(v) for k, v in half.parameters.items()}, list(half.costs), half.iteration,
        resume={k: np.array(v) for k, v in half.resume.items()},
    )  # fmt: skip
    resumed = fit(X, Y, host, num_iterations=90, **kw)
    assert resumed.costs == whole.costs
    for k, v in whole.parameters.items():
        assert np.array_equal(resumed.parameters[k], v), k


def test_a_finite_divergence_stops_the_run_and_keeps_the_last_good_parameters():
    X, Y = data()
    seen = []
    with pytest.raises(DivergenceError, match="grew to") as info:
        fit(X, Y, start([60, 7, 1], X), learning_rate=1e6, num_iterations=300, record_every=1,
            callback=lambda s, c: seen.append((s.iteration - 1, c, s.parameters)))  # fmt: skip
    err = info.value
    first = err.costs[0]
    assert all(c <= DIVERGENCE_FACTOR * max(first, math.log(2)) for c in err.costs)
    assert err.iteration == len(err.costs)  # the first bad one follows the last good one
    kept_iteration = err.iteration - 1
    # the kept parameters are those whose cost was the last good one: before that update
    before = seen[kept_iteration - 1][2] if kept_iteration else None
    if before is not None:
        for k, v in before.items():
            np.testing.assert_array_equal(err.parameters[k], v)


def test_a_cost_that_stays_below_the_rule_trains_on():
    X, Y = data()
    state = fit(X, Y, start([60, 7, 1], X), learning_rate=0.5, num_iterations=200, record_every=1)
    assert max(state.costs) <= DIVERGENCE_FACTOR * max(state.costs[0], math.log(2))


# ------------------------------------------------------------------------------ files


def test_model_files_record_the_hidden_activation_and_checkpoint_state(tmp_path):
    from deepnet.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from deepnet.model_io import Model, load_model, save_model

    params = draw_parameters([12288, 3, 1], "lecun", 1)
    save_model(Model(params, [12288, 3, 1], hidden="tanh"), tmp_path / "m.npz")
    assert load_model(tmp_path / "m.npz").hidden == "tanh"
    save_model(Model(params, [12288, 3, 1]), tmp_path / "r.npz")  # as files written today
    assert load_model(tmp_path / "r.npz").activations == ["relu", "sigmoid"]
    resume = {"gram.P": np.arange(6.0).reshape(3, 2) / 7, "opt.t": 5}
    settings = {"num_iterations": 10, "record_every": 5}
    point = Checkpoint(params, [0.7], 3, settings, {"fingerprint": "x"}, {}, [12288, 3, 1],
                       "float64", resume=resume)  # fmt: skip
    save_checkpoint(point, tmp_path / "c.npz")
    back = load_checkpoint(tmp_path / "c.npz").resume
    assert back.keys() == resume.keys() and back["opt.t"] == 5
    assert np.array_equal(back["gram.P"], resume["gram.P"])


def test_the_command_line_stops_a_finite_divergence(tmp_path, capsys):
    from deepnet import cli

    out = tmp_path / "m.npz"
    args = ["train", "--synthetic", "--lr", "1e6", "-n", "300", "--layers", "12288,4,1"]
    assert cli.main([*args, "--out", str(out), "--no-progress", "--print-every", "0"]) == 1
    err = capsys.readouterr().err
    assert "training diverged: the cost grew to" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "m.ckpt.npz").exists()


def test_every_entry_point_checks_its_arguments_alike(tmp_path):
    from deepnet.distributed import fit_distributed
    from deepnet.streaming import fit_stream, make_synthetic

    X, Y = data()
    source = make_synthetic(tmp_path / "s.h5", 8, image_shape=(2, 2, 3))
    params = draw_parameters([12, 2, 1], "lecun", 1)
    calls = {
        "fit": lambda **kw: fit(X, Y, start([60, 2, 1], X), **kw),
        "fit_stream": lambda **kw: fit_stream(source, TrainState(dict(params)), **kw),
        "fit_distributed": lambda **kw: fit_distributed(
            X[:12], Y, TrainState(dict(params)), comm=None, **kw
        ),
    }
    bad = [
        (dict(learning_rate=True, num_iterations=1), "learning_rate must be a number"),
        (dict(learning_rate=0.1, num_iterations=-1), "num_iterations must be an integer"),
        (dict(learning_rate=0.1, num_iterations=2, record_every=0), "record_every"),
        (dict(learning_rate=0.1, num_iterations=2, checkpoint_every=0), "checkpoint_every"),
    ]
    for call in calls.values():
        for kwargs, message in bad:
            with pytest.raises(InputError, match=message):
                call(**kwargs)


class DecayGD(GradientDescent):
    """Weight decay, ``W <- d W - lr dW``: an update of the form the Gram path tracks with
    its decay factor (as L2 will be)."""

    def __init__(self, learning_rate: float, d: float) -> None:
        super().__init__(learning_rate)
        self.d = d

    def update(self, parameters, grads, state, iteration):
        out = {k: self.d * v - self.learning_rate * grads[f"d{k}"] if f"d{k}" in grads else v
               for k, v in parameters.items()}  # fmt: skip
        return out, state

    def input_step(self, G1, state, iteration):
        return self.learning_rate * G1, self.d, state


class DecayGDGeneric(DecayGD):
    keeps_input_update_linear = False
    factored_per_batch = False


def test_the_gram_path_tracks_a_decaying_update_and_resumes_it_exactly():
    X, Y = data()
    kw = dict(num_iterations=60, record_every=5)
    gram = fit(X, Y, start([60, 6, 1], X), optimizer=DecayGD(0.1, 0.99), gram=True, **kw)
    plain = fit(X, Y, start([60, 6, 1], X), optimizer=DecayGDGeneric(0.1, 0.99), **kw)
    np.testing.assert_allclose(gram.costs, plain.costs, rtol=1e-11)
    for k, v in plain.parameters.items():
        np.testing.assert_allclose(gram.parameters[k], v, rtol=1e-10, atol=1e-13, err_msg=k)
    stops = iter([False] * 22 + [True])
    half = fit(X, Y, start([60, 6, 1], X), optimizer=DecayGD(0.1, 0.99), gram=True,
               should_stop=lambda: next(stops), **kw)  # fmt: skip
    assert half.resume["gram.alpha"] == pytest.approx(0.99**23, rel=1e-12)
    resumed = fit(X, Y, half, optimizer=DecayGD(0.1, 0.99), gram=True, **kw)
    assert resumed.costs == gram.costs
    for k, v in gram.parameters.items():
        assert np.array_equal(resumed.parameters[k], v), k


def test_a_checkpoint_that_cannot_be_written_does_not_stop_the_run(tmp_path, capsys, monkeypatch):
    import errno

    from deepnet import cli

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "m.ckpt.npz"))

    monkeypatch.setattr(cli.train, "save_checkpoint", full)
    args = ["train", "--synthetic", "-n", "30", "--layers", "12288,4,1", "--checkpoint-every"]
    out = tmp_path / "m.npz"
    assert cli.main([*args, "10", "--out", str(out), "--no-progress", "--print-every", "0"]) == 0
    err = capsys.readouterr().err
    assert err.count("could not write the checkpoint") == 4  # at 10, 20, 30 and the end
    assert "No space left on device" in err and out.exists()


def test_the_cuda_step_is_taken_only_for_what_it_implements(fused_cuda_calls):
    taken = fused_cuda_calls
    X, Y = data()
    kw = dict(num_iterations=2, gram=False)
    fit(X, Y, start([60, 3, 1], X), learning_rate=0.1, **kw)
    assert taken == [0.1, 0.1]
    fit(X, Y, start([60, 3, 1], X), learning_rate=0.1, hidden="tanh", **kw)
    fit(X, Y, start([60, 3, 1], X), optimizer=SlowGD(0.1), **kw)
    fit(X, Y, start([60, 3, 1], X), optimizer=DecayGD(0.1, 0.9), **kw)
    assert taken == [0.1, 0.1]  # none of these went to the fused CUDA step
