"""The course's building blocks, written once against the Array API.

Every function follows its inputs: NumPy arrays in, NumPy arrays out; CuPy in, CuPy out;
array-api-strict in, array-api-strict out; and the dtype is kept (float32 stays float32).
Only standard operations are used (``@``, ``sum(..., keepdims=True)``, ``where``, ``exp``,
``log``, ``clip``, ...), which is what lets one body of code run on every backend.

Names, signatures and caches are the course's: a linear cache is ``(A_prev, W, b)``, an
activation cache is ``Z``, and ``L_model_backward`` stores layer l's ``dA_prev`` under
``grads["dA" + str(l - 1)]``.
"""

from __future__ import annotations

from typing import Any, Literal

from array_api_compat import size

from deepnet.backend import array_namespace
from deepnet.errors import InputError, ShapeError
from deepnet.optim import gd_update
from deepnet.spec import ACTIVATIONS, Activation
from deepnet.validation import check_examples, check_linear, check_parameters

Array = Any
ActivationName = Literal["sigmoid", "relu", "tanh", "leaky_relu"]
LinearCache = tuple[Array, Array, Array]
LayerCache = tuple[LinearCache, Array]


def linear_forward(A: Array, W: Array, b: Array) -> tuple[Array, LinearCache]:
    """Z = W A + b, and the cache (A, W, b) for the backward pass."""
    array_namespace(A, W, b)  # one device for all three, or a clear error
    check_linear(A, W, b)
    Z = W @ A + b
    return Z, (A, W, b)


def sigmoid(Z: Array) -> tuple[Array, Array]:
    """1 / (1 + exp(-Z)), without overflow for large |Z|; returns (A, cache=Z)."""
    return ACTIVATIONS["sigmoid"].forward(Z), Z


def relu(Z: Array) -> tuple[Array, Array]:
    """max(0, Z); returns (A, cache=Z)."""
    return ACTIVATIONS["relu"].forward(Z), Z


def sigmoid_backward(dA: Array, cache: Array) -> Array:
    """dZ = dA * s * (1 - s) with s = sigmoid(Z)."""
    return ACTIVATIONS["sigmoid"].from_z(dA, cache)


def relu_backward(dA: Array, cache: Array) -> Array:
    """dZ = dA where Z > 0, else 0."""
    return ACTIVATIONS["relu"].from_z(dA, cache)


def _activation(name: str) -> Activation:
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown activation {name!r}; use one of: {', '.join(ACTIVATIONS)}"
        ) from None


def linear_activation_forward(
    A_prev: Array, W: Array, b: Array, activation: ActivationName
) -> tuple[Array, LayerCache]:
    """One [LINEAR -> ACTIVATION] layer; returns (A, (linear_cache, activation_cache))."""
    Z, linear_cache = linear_forward(A_prev, W, b)
    return _activation(activation).forward(Z), (linear_cache, Z)


def num_layers(parameters: dict[str, Array]) -> int:
    """L, the number of weight layers in a course parameter dict (W1, b1, ..., WL, bL)."""
    return len(parameters) // 2


def L_model_forward(
    X: Array, parameters: dict[str, Array], *, hidden: str = "relu"
) -> tuple[Array, list[LayerCache]]:
    """[LINEAR -> RELU] x (L-1) -> LINEAR -> SIGMOID; returns (AL, caches).

    ``hidden`` names another hidden activation of :data:`deepnet.spec.ACTIVATIONS`.
    """
    L = num_layers(parameters)
    A = X
    caches = []
    for layer in range(1, L + 1):
        activation = "sigmoid" if layer == L else hidden
        A, cache = linear_activation_forward(
            A, parameters[f"W{layer}"], parameters[f"b{layer}"], activation
        )
        caches.append(cache)
    return A, caches


def compute_cost(AL: Array, Y: Array) -> Array:
    """The cross-entropy cost -1/m sum(Y log AL + (1 - Y) log(1 - AL)), as a 0-d array.

    Probabilities are clipped to [tiny, 1] before the logs, so a saturated output (AL exactly
    0 or 1) gives a large finite cost instead of NaN; unsaturated values are unchanged.
    """
    xp = array_namespace(AL, Y)
    if tuple(AL.shape) != tuple(Y.shape) or len(AL.shape) != 2:
        raise ShapeError(
            f"AL and Y must both have shape (1, m); got AL {tuple(AL.shape)}, Y {tuple(Y.shape)}"
        )
    tiny = xp.finfo(AL.dtype).smallest_normal
    m = Y.shape[1]
    log_p = xp.log(xp.clip(AL, tiny, 1.0))
    log_q = xp.log(xp.clip(1 - AL, tiny, 1.0))
    return -xp.sum(Y * log_p + (1 - Y) * log_q) / m


def linear_backward(dZ: Array, cache: LinearCache) -> tuple[Array, Array, Array]:
    """From dZ and (A_prev, W, b): (dA_prev, dW, db)."""
    xp = array_namespace(dZ)
    A_prev, W, _b = cache
    m = A_prev.shape[1]
    dW = 1.0 / m * (dZ @ A_prev.T)
    db = 1.0 / m * xp.sum(dZ, axis=1, keepdims=True)
    dA_prev = W.T @ dZ
    return dA_prev, dW, db


def linear_activation_backward(
    dA: Array, cache: LayerCache, activation: ActivationName
) -> tuple[Array, Array, Array]:
    """Backward through one [LINEAR -> ACTIVATION] layer: (dA_prev, dW, db)."""
    linear_cache, activation_cache = cache
    dZ = _activation(activation).from_z(dA, activation_cache)
    return linear_backward(dZ, linear_cache)


def L_model_backward(
    AL: Array, Y: Array, caches: list[LayerCache], *, hidden: str = "relu"
) -> dict[str, Array]:
    """Gradients of the cost for every layer: dW{l}, db{l}, and dA{l-1} (layer l's dA_prev)."""
    xp = array_namespace(AL, Y)
    L = len(caches)
    if len(AL.shape) != 2 or AL.shape[1] == 0 or size(Y) != size(AL):
        raise ShapeError(
            f"AL and Y must both hold one value per example, shape (1, m) with m >= 1; "
            f"got AL {tuple(AL.shape)}, Y {tuple(Y.shape)}"
        )
    Y = xp.reshape(Y, AL.shape)
    # The course's formula, applied as written (its unit case feeds an AL that is not a
    # probability). The training loop uses the simpler dZL = AL - Y instead.
    # Denominators that are exactly 0 (a saturated output) are nudged to the smallest
    # normal number, so the backward pass never divides by zero; others are untouched.
    tiny = xp.finfo(AL.dtype).smallest_normal
    one_minus_AL = 1 - AL
    dAL = -(
        Y / xp.where(AL == 0, tiny, AL) - (1 - Y) / xp.where(one_minus_AL == 0, tiny, one_minus_AL)
    )
    grads = {}
    dA = dAL
    for layer in range(L, 0, -1):
        activation = "sigmoid" if layer == L else hidden
        dA, dW, db = linear_activation_backward(dA, caches[layer - 1], activation)
        grads[f"dA{layer - 1}"] = dA
        grads[f"dW{layer}"] = dW
        grads[f"db{layer}"] = db
    return grads


def update_parameters(
    parameters: dict[str, Array], grads: dict[str, Array], learning_rate: float
) -> dict[str, Array]:
    """One gradient-descent step, W <- W - lr dW and b <- b - lr db; returns a new dict."""
    return gd_update(parameters, grads, learning_rate)


def predict_proba(X: Array, parameters: dict[str, Array], *, hidden: str = "relu") -> Array:
    """P(cat) for each column of X, shape (1, m)."""
    check_examples(X, None, check_parameters(parameters)[0])
    AL, _ = L_model_forward(X, parameters, hidden=hidden)
    return AL


def predict(
    X: Array, y: Array | None, parameters: dict[str, Array], *, hidden: str = "relu"
) -> Array:
    """0/1 predictions (threshold 0.5) for each column of X, shape (1, m), in X's dtype.

    As in the course, ``y`` may be given; use :func:`accuracy` to compare with it
    (``predict`` itself prints nothing and never reads the labels).
    """
    xp = array_namespace(X)
    AL = predict_proba(X, parameters, hidden=hidden)
    return xp.astype(AL > 0.5, AL.dtype)


def accuracy(predictions: Array, Y: Array) -> float:
    """The fraction of predictions equal to the labels (reads one scalar from the device)."""
    xp = array_namespace(predictions, Y)
    Y = xp.reshape(Y, predictions.shape)
    # A count divided on the host: exact, and free of float64 (absent on JAX in 32-bit mode).
    right = int(xp.count_nonzero(predictions == xp.astype(Y, predictions.dtype)))
    return right / size(predictions)
