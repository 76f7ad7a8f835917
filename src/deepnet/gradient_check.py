"""The second course's gradient checking, for deepnet's L-layer network at any depth.

The course's helpers hard-code its three-layer net; these take the layer sizes from the
parameters instead. The check compares the gradients given with two-sided differences
(J(theta + eps e_i) - J(theta - eps e_i)) / (2 eps) of the cost, one parameter at a time:
2 n forward passes, for small networks only. Rounding in float32 (about 1e-7 relative)
divided by 2 eps swamps the differences, so the check refuses anything but float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import array_api_compat

from deepnet.backend import array_namespace
from deepnet.course_tools import compute_cost_with_regularization
from deepnet.course_updates import check_epsilon, check_lambd
from deepnet.errors import InputError, ShapeError
from deepnet.initialization import check_layer_dims
from deepnet.kernels import L_model_forward, compute_cost
from deepnet.validation import check_examples, check_parameters

Array = Any


def _layer_keys(L: int, prefix: str = "") -> list[str]:
    return [f"{prefix}{name}{layer}" for layer in range(1, L + 1) for name in ("W", "b")]


def dictionary_to_vector(parameters: dict[str, Array]) -> tuple[Array, list[str]]:
    """All parameters as one column (W1, b1, W2, ... each row-major), and each entry's key.

    Returns (theta of shape (n, 1), keys) with keys[i] the name ("W1", ...) entry i came from.
    """
    dims = check_parameters(parameters)
    keys = _layer_keys(len(dims) - 1)
    xp = array_namespace(*parameters.values())
    theta = xp.concat([xp.reshape(parameters[k], (-1, 1)) for k in keys], axis=0)
    names = [k for k in keys for _ in range(math.prod(parameters[k].shape))]
    return theta, names


def vector_to_dictionary(theta: Array, layers_dims: Sequence[int]) -> dict[str, Array]:
    """The inverse of dictionary_to_vector for a network of sizes ``layers_dims``."""
    dims = check_layer_dims(layers_dims)
    xp = array_namespace(theta)
    shapes = {}
    for layer in range(1, len(dims)):
        shapes[f"W{layer}"] = (dims[layer], dims[layer - 1])
        shapes[f"b{layer}"] = (dims[layer], 1)
    n = sum(rows * cols for rows, cols in shapes.values())
    if tuple(theta.shape) not in ((n, 1), (n,)):
        raise ShapeError(
            f"theta must have shape ({n}, 1) for layers {dims}; got {tuple(theta.shape)}"
        )
    theta = xp.reshape(theta, (n,))
    parameters, start = {}, 0
    for key, (rows, cols) in shapes.items():
        parameters[key] = xp.reshape(theta[start : start + rows * cols], (rows, cols))
        start += rows * cols
    return parameters


def gradients_to_vector(gradients: dict[str, Array]) -> Array:
    """dW1, db1, dW2, ... as one column, in dictionary_to_vector's order (dA, dZ are ignored)."""
    L = sum(1 for k in gradients if k.startswith("dW"))
    keys = _layer_keys(L, "d")
    missing = [k for k in keys if k not in gradients]
    if L == 0 or missing:
        raise InputError(
            f"gradients must hold dW1, db1, ..., dWL, dbL; missing {missing or ['dW1', 'db1']}"
        )
    xp = array_namespace(*(gradients[k] for k in keys))
    return xp.concat([xp.reshape(gradients[k], (-1, 1)) for k in keys], axis=0)


def _require_float64(arrays: dict[str, Array]) -> None:
    for name, x in arrays.items():
        xp = array_namespace(x)
        if x.dtype != xp.float64:
            dtype = str(x.dtype).rsplit(".", 1)[-1]  # float32, not array_api_strict.float32
            raise InputError(
                f"gradient checking is meaningless in {dtype}: {name}'s rounding divided by "
                "2 * epsilon swamps the difference it measures; use float64 arrays "
                "(e.g. deepnet.to_device(x, dtype='float64'))"
            )


def _norm(xp: Any, x: Array) -> float:
    return float(xp.sqrt(xp.sum(x * x)))


def gradient_check_n(
    parameters: dict[str, Array],
    gradients: dict[str, Array],
    X: Array,
    Y: Array,
    epsilon: float = 1e-7,
    print_msg: bool = False,
    *,
    lambd: float = 0.0,
) -> float:
    """||grad - gradapprox|| / (||grad|| + ||gradapprox||) for the L-layer network's cost.

    ``gradapprox`` is the course's two-sided difference of the cross-entropy cost (plus the
    L2 term when ``lambd`` > 0) at X, Y. Below 2e-7 the gradients are right. float64 only.
    """
    epsilon = check_epsilon(epsilon)
    lambd = check_lambd(lambd)
    dims = check_parameters(parameters)
    check_examples(X, Y, dims[0])
    grad = gradients_to_vector(gradients)
    _require_float64({**parameters, "X": X, "gradients": grad})
    theta, _ = dictionary_to_vector(parameters)
    if tuple(grad.shape) != tuple(theta.shape):
        raise ShapeError(
            f"gradients hold {grad.shape[0]} values but the parameters {theta.shape[0]}: "
            "pass the gradients of these parameters (dW1, db1, ... of the same shapes)"
        )
    xp = array_namespace(theta, X, Y)

    def cost(values: Array) -> float:
        params = vector_to_dictionary(values, dims)
        AL, _ = L_model_forward(X, params)
        if lambd:
            return float(compute_cost_with_regularization(AL, Y, params, lambd))
        return float(compute_cost(AL, Y))

    n = theta.shape[0]
    index = xp.reshape(xp.arange(n), (n, 1))
    approx = []
    for i in range(n):
        J_plus = cost(xp.where(index == i, theta + epsilon, theta))
        J_minus = cost(xp.where(index == i, theta - epsilon, theta))
        approx.append((J_plus - J_minus) / (2 * epsilon))
    gradapprox = xp.reshape(
        xp.asarray(approx, dtype=xp.float64, device=array_api_compat.device(theta)), (n, 1)
    )
    numerator = _norm(xp, grad - gradapprox)
    denominator = _norm(xp, grad) + _norm(xp, gradapprox)
    difference = numerator / denominator if denominator else 0.0
    if print_msg:
        if difference > 2e-7:
            print(f"There is a mistake in the backward propagation! difference = {difference}")
        else:
            print(f"Your backward propagation works perfectly fine! difference = {difference}")
    return difference
