"""The second course's tools ("Improving Deep Neural Networks") on deepnet's L-layer network.

Initialisations (zeros, random, He), L2 regularisation, inverted dropout on the hidden
layers and mini-batches, with the course's names, signatures and formulas, for any depth
and on every backend (Array API only, nothing updated in place, dtypes kept). Random draws
are taken on the host with NumPy's legacy global generator exactly as the course does
(``np.random.seed(...)`` then ``np.random.randn`` / ``rand`` / ``permutation``), so they
reseed NumPy's global generator as the course's functions do, and the results then move to
the arrays' device. Gradient checking lives in :mod:`deepnet.gradient_check`; momentum,
Adam and learning-rate decay in :mod:`deepnet.course_updates`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import array_api_compat
import numpy as np

from deepnet.backend import array_namespace
from deepnet.course_updates import check_keep_prob, check_lambd, l2_gradient
from deepnet.errors import InputError, ShapeError
from deepnet.initialization import check_layer_dims, place
from deepnet.kernels import (
    L_model_backward,
    LayerCache,
    compute_cost,
    linear_activation_backward,
    linear_activation_forward,
    num_layers,
)
from deepnet.validation import check_count, check_parameters

Array = Any


def host_to_like(host: np.ndarray, like: Array) -> Array:
    """A host NumPy array as an array of ``like``'s namespace, on ``like``'s device."""
    xp = array_namespace(like)
    if array_api_compat.is_numpy_array(like):
        return host
    return xp.asarray(host, device=array_api_compat.device(like))


# --- initialisation ------------------------------------------------------------------------


def initialize_parameters_zeros(
    layers_dims: Sequence[int], *, device: str | None = None, dtype: Any = "float64"
) -> dict[str, Array]:
    """All weights and biases zero: the course's example of a failed symmetry break."""
    dims = check_layer_dims(layers_dims)
    host = {}
    for layer in range(1, len(dims)):
        host[f"W{layer}"] = np.zeros((dims[layer], dims[layer - 1]))
        host[f"b{layer}"] = np.zeros((dims[layer], 1))
    return place(host, device, dtype)


def _seeded_randn(dims: list[int], scale) -> dict[str, np.ndarray]:
    np.random.seed(3)
    host = {}
    for layer in range(1, len(dims)):
        host[f"W{layer}"] = np.random.randn(dims[layer], dims[layer - 1]) * scale(dims[layer - 1])
        host[f"b{layer}"] = np.zeros((dims[layer], 1))
    return host


def initialize_parameters_random(
    layers_dims: Sequence[int], *, device: str | None = None, dtype: Any = "float64"
) -> dict[str, Array]:
    """Large random weights ``randn * 10`` after ``np.random.seed(3)``, zero biases (course)."""
    dims = check_layer_dims(layers_dims)
    return place(_seeded_randn(dims, lambda n_prev: 10), device, dtype)


def initialize_parameters_he(
    layers_dims: Sequence[int], *, device: str | None = None, dtype: Any = "float64"
) -> dict[str, Array]:
    """He initialisation ``randn(n_l, n_prev) * sqrt(2 / n_prev)``, seed 3, zero biases."""
    dims = check_layer_dims(layers_dims)
    return place(_seeded_randn(dims, lambda n_prev: np.sqrt(2.0 / n_prev)), device, dtype)


# --- L2 regularisation -------------------------------------------------------------------


def l2_cost(parameters: dict[str, Array], lambd: float, m: int) -> Array:
    """lambd / (2 m) * sum_l ||W_l||_F^2, as a 0-d array (the course's order of operations)."""
    xp = array_namespace(*parameters.values())
    total = None
    for layer in range(1, num_layers(parameters) + 1):
        W = parameters[f"W{layer}"]
        term = xp.sum(W * W)
        total = term if total is None else total + term
    return 1.0 / m * lambd / 2 * total


def compute_cost_with_regularization(
    A3: Array, Y: Array, parameters: dict[str, Array], lambd: float
) -> Array:
    """Cross-entropy plus lambd / (2 m) * sum_l ||W_l||_F^2, any depth; a 0-d array.

    The course names the output ``A3`` (its three-layer net); any network's AL will do.
    """
    lambd = check_lambd(lambd)
    check_parameters(parameters)
    cross_entropy = compute_cost(A3, Y)  # checks A3 and Y: both (1, m)
    return cross_entropy + l2_cost(parameters, lambd, Y.shape[1])


# --- the L-layer backward with L2 and/or dropout ------------------------------------------


def _backward(
    AL: Array,
    Y: Array,
    caches: list[LayerCache],
    masks: list[Array] | None,
    keep_prob: float,
    lambd: float,
) -> dict[str, Array]:
    # The output layer is L_model_backward on its cache alone (same checks, same dAL formula,
    # so that lambd = 0 and keep_prob = 1 give L_model_backward's gradients bit for bit).
    L = len(caches)
    if L == 0:
        raise InputError("caches is empty: pass the caches of the forward pass (one per layer)")
    m = AL.shape[1]
    last = L_model_backward(AL, Y, caches[-1:])
    dA, grads = last["dA0"], {f"dW{L}": last["dW1"], f"db{L}": last["db1"]}
    for layer in range(L, 0, -1):
        if layer < L:
            dA, grads[f"dW{layer}"], grads[f"db{layer}"] = linear_activation_backward(
                dA, caches[layer - 1], "relu"
            )
        if lambd:
            grads[f"dW{layer}"] = l2_gradient(
                grads[f"dW{layer}"], caches[layer - 1][0][1], lambd, m
            )
        if masks is not None and layer > 1:
            dA = dA * masks[layer - 2] / keep_prob  # the units layer - 1 dropped get no gradient
        grads[f"dA{layer - 1}"] = dA
    return grads


def L_model_backward_with_regularization(
    AL: Array, Y: Array, caches: list[LayerCache], lambd: float
) -> dict[str, Array]:
    """L_model_backward's gradients of the L2-regularised cost: each dW_l gains lambd / m * W_l."""
    return _backward(AL, Y, caches, None, 1.0, check_lambd(lambd))


# --- inverted dropout ----------------------------------------------------------------------


def dropout_forward(A: Array, keep_prob: float) -> tuple[Array, Array]:
    """Inverted dropout on one activation: D = rand(A.shape) < keep_prob, A * D / keep_prob.

    ``rand`` is NumPy's global generator on the host (seed it first, as the course does);
    returns (A, D) with D as 0/1 in A's dtype, on A's device.
    """
    xp = array_namespace(A)
    D = host_to_like(np.random.rand(A.shape[0], A.shape[1]) < keep_prob, A)
    D = xp.astype(D, A.dtype)
    return A * D / keep_prob, D


def dropout_backward(dA: Array, D: Array, keep_prob: float) -> Array:
    """dA * D / keep_prob: only the units kept in the forward pass pass a gradient back."""
    return dA * D / keep_prob


def L_model_forward_with_dropout(
    X: Array, parameters: dict[str, Array], keep_prob: float = 0.5, *, seed: int | None = 1
) -> tuple[Array, list[LayerCache], list[Array]]:
    """L_model_forward with inverted dropout on each hidden layer (never the input or output).

    Calls ``np.random.seed(seed)`` first, as the course's forward_propagation_with_dropout
    does with seed 1 (``seed=None`` continues the global stream instead). Returns
    (AL, caches, masks): caches as L_model_forward's, where layer l + 1's A_prev is the
    dropped-out A_l, and masks[l - 1] = D_l for the hidden layers l = 1 .. L - 1.
    With keep_prob = 1 every unit is kept and AL, caches are L_model_forward's bit for bit.
    """
    keep_prob = check_keep_prob(keep_prob)
    if seed is not None:
        np.random.seed(seed)
    L = num_layers(parameters)
    A, caches, masks = X, [], []
    for layer in range(1, L + 1):
        activation = "sigmoid" if layer == L else "relu"
        A, cache = linear_activation_forward(
            A, parameters[f"W{layer}"], parameters[f"b{layer}"], activation
        )
        caches.append(cache)
        if layer < L:
            A, D = dropout_forward(A, keep_prob)
            masks.append(D)
    return A, caches, masks


def L_model_backward_with_dropout(
    AL: Array, Y: Array, caches: list[LayerCache], masks: list[Array], keep_prob: float
) -> dict[str, Array]:
    """Gradients of a forward pass with dropout: each hidden dA_l becomes dA_l * D_l / keep_prob.

    ``caches`` and ``masks`` are L_model_forward_with_dropout's; ``grads["dA" + str(l)]``
    holds the masked gradient that flows into layer l's activation.
    """
    keep_prob = check_keep_prob(keep_prob)
    if len(masks) != len(caches) - 1:
        raise ShapeError(
            f"masks must hold one dropout mask per hidden layer ({len(caches) - 1}); "
            f"got {len(masks)}: pass the masks L_model_forward_with_dropout returned"
        )
    return _backward(AL, Y, caches, masks, keep_prob, 0.0)


# --- mini-batches --------------------------------------------------------------------------


def random_mini_batches(
    X: Array, Y: Array, mini_batch_size: int = 64, seed: int = 0
) -> list[tuple[Array, Array]]:
    """The course's shuffled partition: np.random.seed(seed), one permutation of the columns,
    then batches of mini_batch_size columns in order, the last one partial if m doesn't divide.
    """
    check_count(mini_batch_size, "mini_batch_size", 1)
    xp = array_namespace(X, Y)
    if len(X.shape) != 2 or len(Y.shape) != 2 or X.shape[1] != Y.shape[1]:
        raise ShapeError(
            f"X and Y must be 2-D with one example per column, the same number of columns; "
            f"got X {tuple(X.shape)}, Y {tuple(Y.shape)}"
        )
    m = X.shape[1]
    if m == 0:
        raise ShapeError("X has no examples (0 columns); at least one is needed")
    np.random.seed(seed)
    permutation = host_to_like(np.random.permutation(m), X)
    shuffled_X = xp.take(X, permutation, axis=1)
    shuffled_Y = xp.take(Y, permutation, axis=1)
    bounds = [(k, min(k + mini_batch_size, m)) for k in range(0, m, mini_batch_size)]
    return [(shuffled_X[:, a:b], shuffled_Y[:, a:b]) for a, b in bounds]
