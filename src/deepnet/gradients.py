"""Gradients as values: ``train_step`` split into "compute the gradient" and "apply it".

Out-of-core full-batch training adds up the gradients of many chunks before one update, and
data-parallel training adds up the gradients of every rank's shard. Both need the gradient
of the cost *summed* over some examples and divided by the *global* number of examples, so
that the sum over the pieces is the full-batch gradient. :func:`gradients` computes exactly
what :func:`deepnet.training.train_step` computes, in the same order and with the same
operations, so ``apply_gradients(p, *gradients(p, X, Y)[:1], lr)`` equals
``train_step(p, X, Y, lr)`` bit for bit when ``m_total`` is X's own number of columns.
"""

from __future__ import annotations

from typing import Any

from deepnet.backend import array_namespace
from deepnet.kernels import num_layers, sigmoid

Array = Any


def gradients(
    parameters: dict[str, Array], X: Array, Y: Array, m_total: int | None = None
) -> tuple[dict[str, Array], Array]:
    """(dW1, db1, ..., cost) of the examples in X, each summed over them and divided by m_total.

    ``m_total`` defaults to X's number of columns (the ordinary mean). With a shard or a
    chunk, pass the number of examples of the whole data set: the gradients and costs of
    the pieces then add up to the full-batch ones. The cost is a 0-d device array.
    """
    xp = array_namespace(X, Y)
    L = num_layers(parameters)
    m = X.shape[1] if m_total is None else m_total
    activations = [X]
    for layer in range(1, L):
        Z = parameters[f"W{layer}"] @ activations[-1] + parameters[f"b{layer}"]
        activations.append(xp.maximum(Z, 0.0))
    ZL = parameters[f"W{L}"] @ activations[-1] + parameters[f"b{L}"]
    AL, _ = sigmoid(ZL)
    cost = xp.sum(xp.logaddexp(ZL, 0.0) - Y * ZL) / m  # as train_step: stable at saturation
    dZ = (AL - Y) / m
    grads = {}
    for layer in range(L, 0, -1):
        A_prev = activations[layer - 1]
        if layer > 1:  # nobody needs dX: skip the input layer's 12288-row product
            dZ_prev = xp.where(A_prev > 0, parameters[f"W{layer}"].T @ dZ, 0.0)
        grads[f"dW{layer}"] = dZ @ A_prev.T
        grads[f"db{layer}"] = xp.sum(dZ, axis=1, keepdims=True)
        if layer > 1:
            dZ = dZ_prev
    return {k: grads[k] for k in grad_keys(L)}, cost


def grad_keys(L: int) -> list[str]:
    """Gradient names in a fixed order (dW1, db1, dW2, ...): the layout of a flat buffer."""
    return [f"d{name}{layer}" for layer in range(1, L + 1) for name in ("W", "b")]


def add_gradients(total: dict[str, Array] | None, grads: dict[str, Array]) -> dict[str, Array]:
    """``total + grads`` key by key (``grads`` itself when ``total`` is None)."""
    if total is None:
        return dict(grads)
    return {k: total[k] + grads[k] for k in total}


def apply_gradients(
    parameters: dict[str, Array], grads: dict[str, Array], learning_rate: float
) -> dict[str, Array]:
    """One gradient-descent step, ``W <- W - lr dW``, ``b <- b - lr db``, in train_step's order."""
    L = num_layers(parameters)
    return {
        f"{name}{layer}": parameters[f"{name}{layer}"] - learning_rate * grads[f"d{name}{layer}"]
        for layer in range(1, L + 1)
        for name in ("W", "b")
    }
