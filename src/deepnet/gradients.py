"""Gradients as values: ``train_step`` split into "compute the gradient" and "apply it".

Out-of-core full-batch training adds up the gradients of many chunks before one update, and
data-parallel training adds up the gradients of every rank's shard. Both need the gradient
of the cost *summed* over some examples and divided by the *global* number of examples, so
that the sum over the pieces is the full-batch gradient. :func:`gradients` computes exactly
what :func:`deepnet.training.train_step` computes (both are built on
:func:`deepnet.step.backward_above_input`), so ``apply_gradients(p, *gradients(p, X, Y)[:1],
lr)`` equals ``train_step(p, X, Y, lr)``: bit for bit except W1, which train_step updates as
``W1 - (lr * G1) @ X.T`` (scaling the small factor) and which agrees to rounding. On CuPy
this holds for the generic step (``DEEPNET_CUDA_FAST=0``); the fused CUDA step sums in
another order (cuBLAS GEMV, in-place updates) and agrees to rounding only.
"""

from __future__ import annotations

from typing import Any

from deepnet.kernels import num_layers
from deepnet.optim import gd_update
from deepnet.regularization import NONE, Regularization
from deepnet.step import backward_above_input, input_gradient, input_product

Array = Any


def gradients(
    parameters: dict[str, Array],
    X: Array,
    Y: Array,
    m_total: int | None = None,
    hidden: str = "relu",
    *,
    keep_prob: float = 1.0,
    masks: list[Array] | None = None,
) -> tuple[dict[str, Array], Array]:
    """(dW1, db1, ..., cost) of the examples in X, each summed over them and divided by m_total.

    ``m_total`` defaults to X's number of columns (the ordinary mean). With a shard or a
    chunk, pass the number of examples of the whole data set: the gradients and costs of
    the pieces then add up to the full-batch ones. The cost is a 0-d device array.
    ``masks`` (with ``keep_prob``) apply inverted dropout to the hidden layers: X's columns
    of the full batch's masks (:meth:`deepnet.regularization.Regularization.piece_masks`).
    No L2 here: it is added once to the sum (``Regularization.add_l2``).
    """
    reg = Regularization(keep_prob=keep_prob) if masks else NONE
    grads, G1, cost = backward_above_input(
        parameters, input_product(parameters["W1"], X), Y, m_total, hidden, reg=reg, masks=masks
    )
    grads["dW1"] = input_gradient(G1, X)
    return {k: grads[k] for k in grad_keys(num_layers(parameters))}, cost


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
    return gd_update(parameters, grads, learning_rate)
