"""Shapes, dtypes and devices, for any layer sizes and batch size, on every grid entry."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import deepnet
from deepnet.training import train_step

dims_strategy = st.lists(st.integers(1, 6), min_size=2, max_size=5)
settings.register_profile("ci", max_examples=40, deadline=None)
settings.load_profile("ci")


def make(backend, dims, m, seed=0):
    rng = np.random.RandomState(seed)
    params = {}
    for layer in range(1, len(dims)):
        params[f"W{layer}"] = backend.asarray(rng.randn(dims[layer], dims[layer - 1]))
        params[f"b{layer}"] = backend.asarray(rng.randn(dims[layer], 1))
    X = backend.asarray(rng.randn(dims[0], m))
    Y = backend.asarray((rng.rand(1, m) > 0.5).astype(float))
    return params, X, Y


def examples(backend) -> int:
    """Hypothesis examples per grid entry. Eager JAX compiles every operation anew for each
    new shape (~50 ms each, ~2 s per example here), so it gets two shapes rather than 40."""
    return 2 if backend.name == "jax" else 40


def test_forward_backward_shapes_and_dtypes(backend):
    want = getattr(backend.xp, backend.dtype)

    @settings(max_examples=examples(backend))
    @given(dims=dims_strategy, m=st.integers(1, 8))
    def check(dims, m):
        params, X, Y = make(backend, dims, m)
        AL, caches = deepnet.L_model_forward(X, params)
        assert AL.shape == (dims[-1], m) and AL.dtype == want and backend.is_own(AL)
        assert len(caches) == len(dims) - 1
        if dims[-1] != 1:
            return  # the cost and its gradient are for one output unit
        cost = deepnet.compute_cost(AL, Y)
        assert cost.shape == () and cost.dtype == want
        grads = deepnet.L_model_backward(AL, Y, caches)
        for layer in range(1, len(dims)):
            for name in ("W", "b"):
                g = grads[f"d{name}{layer}"]
                assert g.shape == params[f"{name}{layer}"].shape and g.dtype == want
                assert backend.is_own(g)
            assert grads[f"dA{layer - 1}"].shape == (dims[layer - 1], m)
        new = deepnet.update_parameters(params, grads, 0.01)
        assert all(new[k].shape == v.shape and new[k].dtype == want for k, v in params.items())
        assert all(backend.is_own(v) for v in new.values())

    check()


def test_train_step_keeps_namespace_shape_and_dtype(backend):
    want = getattr(backend.xp, backend.dtype)

    @settings(max_examples=examples(backend))
    @given(dims=dims_strategy.map(lambda d: [*d[:-1], 1]), m=st.integers(1, 8))
    def check(dims, m):
        params, X, Y = make(backend, dims, m)
        new, cost = train_step(params, X, Y, 0.1)
        assert cost.dtype == want and backend.is_own(cost)
        for key, value in params.items():
            assert new[key].shape == value.shape and new[key].dtype == want
            assert backend.is_own(new[key])

    check()


@given(z=st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=20))
def test_activations_stay_in_range(z):
    Z = np.asarray([z])
    with np.errstate(all="raise"):
        A, cache = deepnet.sigmoid(Z)
        R, _ = deepnet.relu(Z)
    assert cache is Z
    assert np.all((A >= 0) & (A <= 1))
    assert np.all(R >= 0) and np.all((R == Z) | (R == 0))
