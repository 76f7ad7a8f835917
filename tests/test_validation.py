"""Bad input at the public boundary: deepnet's own error, saying what was expected."""

from __future__ import annotations

import numpy as np
import pytest

import deepnet
from deepnet.training import L_layer_model, two_layer_model
from deepnet.validation import check_examples


def data(n=4, m=5):
    rng = np.random.RandomState(0)
    return rng.rand(n, m), (rng.rand(1, m) > 0.5).astype(np.int64)


def train(X, Y, dims=(4, 3, 1), **kw):
    kw.setdefault("num_iterations", 2)
    return L_layer_model(X, Y, list(dims), **kw)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda X, Y: train(X[:3], Y), deepnet.ShapeError, r"shape \(4, m\).*got \(3, 5\)"),
        (lambda X, Y: train(X, Y[:, :4]), deepnet.ShapeError, r"Y must have shape \(1, 5\)"),
        (lambda X, Y: train(X, Y.T), deepnet.ShapeError, r"Y must have shape \(1, 5\)"),
        (lambda X, Y: train(X, Y * 2), deepnet.InputError, "labels 0 .* or 1"),
        (lambda X, Y: train((X * 255).astype(np.uint8), Y), deepnet.InputError, "X / 255"),
        (lambda X, Y: train(X[:, :0], Y[:, :0]), deepnet.ShapeError, "no examples"),
        (lambda X, Y: train(X, Y, dims=[4]), deepnet.InputError, "at least 2"),
        (lambda X, Y: train(X, Y, dims=[4, 0, 1]), deepnet.InputError, "positive integers"),
        (lambda X, Y: train(X, Y, dims=[4, 2.5, 1]), deepnet.InputError, "positive integers"),
        (lambda X, Y: train(np.where(X > 0.5, np.nan, X), Y), deepnet.InputError, "NaN"),
        (lambda X, Y: train(X, Y, learning_rate=0), deepnet.InputError, "learning_rate"),
        (lambda X, Y: train(X, Y, learning_rate=-1), deepnet.InputError, "> 0"),
        (lambda X, Y: train(X, Y, learning_rate=float("nan")), deepnet.InputError, "finite"),
        (lambda X, Y: train(X, Y, num_iterations=-1), deepnet.InputError, "num_iterations"),
        (lambda X, Y: train(X, Y, batch_size=0), deepnet.InputError, "batch_size"),
        (lambda X, Y: train(X, Y, dtype="float16"), deepnet.InputError, "float64, float32"),
        (lambda X, Y: train(X, Y, device="tpu"), deepnet.DeviceError, "valid devices"),
        (lambda X, Y: two_layer_model(X, Y, (4, 1)), deepnet.InputError, "n_x, n_h, n_y"),
        (lambda X, Y: train(X, Y, init="xavier"), deepnet.InputError, "small, lecun"),
    ],
)
def test_bad_training_input(make, error, message):
    X, Y = data()
    with pytest.raises(error, match=message):
        make(X, Y)


def test_every_error_is_a_deepnet_error():
    X, Y = data()
    with pytest.raises(deepnet.DeepnetError):
        train(X[:3], Y)


def test_mixed_libraries_in_one_training_call():
    strict = pytest.importorskip("array_api_strict")
    X, Y = data()
    with pytest.raises(deepnet.DeviceError, match="mixed"):
        train(strict.asarray(X), Y)


def test_predict_checks_x_against_the_first_layer():
    params = deepnet.initialize_parameters_deep([4, 3, 1])
    X, _ = data(n=5)
    with pytest.raises(deepnet.ShapeError, match=r"\(4, m\)"):
        deepnet.predict(X, None, params)


def test_predict_checks_the_parameter_chain():
    params = deepnet.initialize_parameters_deep([4, 3, 1])
    params["W2"] = np.ones((1, 2))
    with pytest.raises(deepnet.ShapeError, match="W2"):
        deepnet.predict(data()[0], None, params)
    with pytest.raises(deepnet.InputError, match=r"keys W1, b1, \.\.\., W1, b1; got \['W1'\]"):
        deepnet.predict(data()[0], None, {"W1": np.ones((1, 4))})


def test_linear_forward_shape_mismatch_is_explained():
    with pytest.raises(deepnet.ShapeError, match="do not fit W @ A"):
        deepnet.linear_forward(np.ones((3, 2)), np.ones((1, 4)), np.ones((1, 1)))
    with pytest.raises(deepnet.ShapeError, match=r"b must have shape \(1, 1\)"):
        deepnet.linear_forward(np.ones((3, 2)), np.ones((1, 3)), np.ones((2, 1)))


def test_compute_cost_shape_mismatch_is_explained():
    with pytest.raises(deepnet.ShapeError, match="AL and Y"):
        deepnet.compute_cost(np.full((1, 3), 0.5), np.ones((1, 2)))


def test_unknown_activation():
    with pytest.raises(deepnet.InputError, match="unknown activation 'gelu'; use one of: relu"):
        deepnet.linear_activation_forward(np.ones((3, 2)), np.ones((1, 3)), np.ones((1, 1)), "gelu")


def test_boundary_checks_on_every_backend(backend):
    """The same one-line errors for any library's arrays (no method-vs-attribute surprises)."""
    X, Y = (backend.asarray(a) for a in data())
    check_examples(X, Y, 4)  # good input passes
    with pytest.raises(deepnet.ShapeError, match=r"shape \(3, m\).*got \(4, 5\)"):
        check_examples(X, Y, 3)
    with pytest.raises(deepnet.InputError, match="labels 0 .* or 1"):
        check_examples(X, Y * 2, 4)
    bad = data()[0] > 0.8
    with pytest.raises(deepnet.InputError, match=f"contains {int(bad.sum())} NaN"):
        check_examples(backend.asarray(np.where(bad, np.nan, 0.5)), Y, 4)
    params = {k: backend.asarray(v) for k, v in deepnet.initialize_parameters(4, 3, 1).items()}
    with pytest.raises(deepnet.ShapeError, match=r"\(4, m\)"):
        deepnet.predict(backend.asarray(data(n=5)[0]), None, params)
    with pytest.raises(deepnet.ShapeError, match="AL and Y"):
        deepnet.compute_cost(backend.asarray(np.full((1, 3), 0.5)), Y)
    AL = backend.asarray(np.full((1, 5), 0.5))  # the check comes first: no caches needed
    with pytest.raises(deepnet.ShapeError, match="AL and Y must both hold one value"):
        deepnet.L_model_backward(AL, backend.asarray(np.ones((1, 4))), [])


def test_mixed_libraries_on_every_backend(backend):
    if backend.name == "numpy":
        pytest.skip("mixing needs a second library")
    W = backend.asarray(np.ones((1, 2)))
    with pytest.raises(deepnet.DeviceError, match="mixed in one call"):
        deepnet.linear_forward(np.ones((2, 3)), W, backend.asarray(np.zeros((1, 1))))
