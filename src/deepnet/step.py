"""The fused gradient-descent step, split around the first layer's two wide products.

On the course's data nearly all the work of a step is in two products with the
12288-row input: ``W1 @ X`` forward and ``dZ1 @ X.T`` for dW1. Everything else (the
small layers, the cost, the backward pass down to dZ1) is cheap and lives in
:func:`step_above_input`, shared by :func:`deepnet.training.train_step` (which does the
two wide products directly) and :mod:`deepnet.fastpath` (which tracks ``W1 @ X`` through
the Gram matrix ``X.T @ X`` instead).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import is_numpy_array

from deepnet.backend import array_namespace
from deepnet.course_updates import l2_gradient
from deepnet.kernels import num_layers, sigmoid
from deepnet.optim import Optimizer, State, input_step
from deepnet.regularization import NONE, Regularization
from deepnet.spec import activation

Array = Any


def is_column_major(X: Array) -> bool:
    """True when X's columns (the examples) are contiguous, as ``x.reshape(m, -1).T`` gives.

    Array API arrays do not expose their layout; NumPy and CuPy do, through ``.flags``.
    Unknown layouts count as row-major.
    """
    flags = getattr(X, "flags", None)
    try:
        return bool(flags["F_CONTIGUOUS"]) and not bool(flags["C_CONTIGUOUS"])
    except (TypeError, KeyError):
        return False


def input_product(W1: Array, X: Array) -> Array:
    """``W1 @ X``, computed the way BLAS runs fastest for X's layout and dtype.

    For a column-major float32 X, ``(X.T @ W1.T).T`` hands BLAS a row-major operand with
    the long dimension innermost: on OpenBLAS it measured 1.3-1.8x faster than ``W1 @ X``
    at m = 209 (docs/benchmarks.md). In float64 it did not help, so ``W1 @ X`` is kept. The
    result is the same product, summed in another order.
    """
    xp = array_namespace(W1, X)
    if X.dtype == xp.float32 and is_column_major(X):
        return (X.T @ W1.T).T
    return W1 @ X


def input_gradient(G: Array, X: Array) -> Array:
    """``G @ X.T`` (dW1, or W1's change ``H1 @ X.T``), computed the way BLAS runs fastest.

    For a row-major float32 NumPy X, ``(X @ G.T).T`` gives OpenBLAS's SGEMM the long
    dimension as its rows: measured 1.3-1.8x faster than ``G @ X.T`` at m = 64 to 1024
    (docs/benchmarks.md); it is then copied to row-major (n1 x 12288: cheap) so that the
    update's elementwise work runs on one layout. In float64, for a column-major X and on
    other libraries it was not faster or not measured, so ``G @ X.T`` is kept. The same
    product, summed in another order.
    """
    if is_numpy_array(X) and X.dtype == np.float32 and not is_column_major(X):
        return np.ascontiguousarray((X @ G.T).T)
    return G @ X.T


def backward_above_input(
    parameters: dict[str, Array],
    P1: Array,
    Y: Array,
    m: int | None = None,
    hidden: str = "relu",
    *,
    reg: Regularization = NONE,
    masks: list[Array] | None = None,
    w1_squared: Array | None = None,
) -> tuple[dict[str, Array], Array, Array]:
    """Forward, cost and backward of everything but dW1, given ``P1 = W1 @ X``.

    Returns ``(grads, G1, cost)``: dW2, ..., dWL and db1, ..., dbL; the first layer's
    ``dZ1 / m`` (so that ``dW1 = G1 @ X.T``, plus ``lambd / m * W1`` with L2); and the cost
    before the step as a 0-d array. Every gradient and the cost are sums over the examples
    divided by ``m`` (default: P1's number of columns; a shard passes the whole data set's,
    so the pieces add up).
    No dA is formed for the input layer, the hidden activation's derivative is taken from
    its output (``hidden``: a name of :data:`deepnet.spec.ACTIVATIONS`; ReLU masks come
    from the activations), the output layer's dZ is ``AL - Y`` directly, and 1/m is applied
    once, to the smallest array.

    ``reg`` (:mod:`deepnet.regularization`): with ``lambd`` the cost gains the L2 term (W1's
    part from ``w1_squared`` = sum(W1 * W1), which the caller computes: W1 is not here) and
    each dW_l gains ``lambd / m * W_l``; with dropout, ``masks`` (one 0/1 array per hidden
    layer) are applied forward and backward as inverted dropout.
    """
    xp = array_namespace(P1, Y)
    act = activation(hidden)
    L = num_layers(parameters)
    m = P1.shape[1] if m is None else m
    keep_prob = reg.keep_prob
    Z = P1 + parameters["b1"]
    kept, outputs = [], []  # A1 .. A(L-1) as the next layer sees them; before dropout
    for layer in range(2, L + 1):
        A = act.forward(Z)
        outputs.append(A)
        if masks:
            A = A * masks[layer - 2] / keep_prob
        kept.append(A)
        Z = parameters[f"W{layer}"] @ A + parameters[f"b{layer}"]
    AL, _ = sigmoid(Z)
    # -[Y log(AL) + (1-Y) log(1-AL)] == log(1 + e^Z) - Y Z, finite even when AL is 0 or 1.
    cost = xp.sum(xp.logaddexp(Z, 0.0) - Y * Z) / m
    if reg.lambd:
        total = w1_squared
        for layer in range(2, L + 1):
            W = parameters[f"W{layer}"]
            total = total + xp.sum(W * W)
        cost = cost + 1.0 / m * reg.lambd / 2 * total  # course_tools.l2_cost's order
    dZ = (AL - Y) / m
    grads = {}
    for layer in range(L, 1, -1):
        A_prev = kept[layer - 2]
        dA_prev = parameters[f"W{layer}"].T @ dZ
        if masks:
            dA_prev = dA_prev * masks[layer - 2] / keep_prob
        dZ_prev = act.from_a(dA_prev, outputs[layer - 2])
        dW = dZ @ A_prev.T
        grads[f"dW{layer}"] = l2_gradient(dW, parameters[f"W{layer}"], reg.lambd, m) if (
            reg.lambd) else dW  # fmt: skip
        grads[f"db{layer}"] = xp.sum(dZ, axis=1, keepdims=True)
        dZ = dZ_prev
    grads["db1"] = xp.sum(dZ, axis=1, keepdims=True)
    return grads, dZ, cost


def step_above_input(
    parameters: dict[str, Array],
    P1: Array,
    Y: Array,
    optimizer: Optimizer,
    state: State,
    iteration: int,
    hidden: str = "relu",
    *,
    reg: Regularization = NONE,
    batch: int = 0,
    w1_squared: Array | None = None,
) -> tuple[dict[str, Array], Array, Array, State]:
    """:func:`backward_above_input`, then the optimizer's update of every parameter but W1.

    Returns ``(new parameters but W1, G1, cost, new state)``; W1 is the caller's (its
    gradient is ``G1 @ X.T`` plus ``reg.lambd / m * W1``, or whatever the Gram path tracks
    instead). Dropout masks are drawn for (``iteration``, ``batch``).
    """
    masks = reg.device_masks(parameters, P1, iteration, batch) if reg.keep_prob < 1 else None
    grads, G1, cost = backward_above_input(
        parameters, P1, Y, None, hidden, reg=reg, masks=masks, w1_squared=w1_squared
    )
    rest = {k: v for k, v in parameters.items() if k != "W1"}
    updated, state = optimizer.update(rest, grads, state, iteration)
    return updated, G1, cost, state


def optimizer_step(
    parameters: dict[str, Array],
    X: Array,
    Y: Array,
    optimizer: Optimizer,
    state: State,
    iteration: int,
    hidden: str = "relu",
    fixed_input: bool = False,
    *,
    reg: Regularization = NONE,
    batch: int = 0,
) -> tuple[dict[str, Array], Array, State]:
    """One step of ``optimizer`` on (X, Y): ``(new parameters, cost before it, new state)``.

    Where the optimizer's factored W1 update is exact (:mod:`deepnet.optim`: always with
    ``factored_per_batch``; with ``keeps_input_update_linear`` when ``fixed_input``, X being
    the same at every step), W1 moves by ``decay * W1 - H1 @ X.T`` and no 12288-wide
    gradient is formed; otherwise ``dW1 = G1 @ X.T`` (+ the L2 term) goes through
    ``optimizer.update``. ``reg`` adds L2 and dropout (masks drawn for ``iteration`` and
    ``batch``, the mini-batch's index in its epoch).
    """
    xp = array_namespace(X, Y)
    W1 = parameters["W1"]
    P1 = input_product(W1, X)
    m = X.shape[1]
    masks = reg.device_masks(parameters, P1, iteration, batch) if reg.keep_prob < 1 else None
    grads, G1, cost = backward_above_input(
        parameters, P1, Y, None, hidden, reg=reg, masks=masks,
        w1_squared=xp.sum(W1 * W1) if reg.lambd else None,
    )  # fmt: skip
    if optimizer.factored_per_batch or (fixed_input and optimizer.keeps_input_update_linear):
        rest = {k: v for k, v in parameters.items() if k != "W1"}
        updated, state = optimizer.update(rest, grads, state, iteration)
        weight = reg.lambd / m if reg.lambd else 0.0
        H1, decay, state = input_step(optimizer, G1, state, iteration, weight)
        W1 = W1 if decay == 1 else decay * W1
        updated["W1"] = W1 - input_gradient(H1, X)
        return in_course_order(updated), cost, state
    dW1 = input_gradient(G1, X)
    grads["dW1"] = l2_gradient(dW1, W1, reg.lambd, m) if reg.lambd else dW1
    updated, state = optimizer.update(parameters, grads, state, iteration)
    return in_course_order(updated), cost, state


def in_course_order(parameters: dict[str, Array]) -> dict[str, Array]:
    """The dict ordered W1, b1, W2, b2, ... as the course builds it."""
    return {k: parameters[k] for k in sorted(parameters, key=lambda k: (int(k[1:]), k[0]))}
