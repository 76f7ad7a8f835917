"""Checks at the public boundary, run once before any work.

Each failure is deepnet's own error saying what was expected and what was given, instead of
a broadcasting or matmul message from deep inside the array library. The checks that read
values (labels, finiteness) cost one pass over the data, once per call, never per iteration.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from array_api_compat import size

from deepnet.backend import array_namespace
from deepnet.errors import InputError, ShapeError

Array = Any


def _shape(x: Array) -> tuple[int, ...]:
    return tuple(int(n) for n in x.shape)


def check_float_array(x: Array, name: str) -> None:
    """``x`` must be an array of a real floating dtype (integer pixels must be scaled first)."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise InputError(f"{name} must be an array, got {type(x).__name__}")
    xp = array_namespace(x)
    if not xp.isdtype(x.dtype, "real floating"):
        hint = (
            " (raw pixels? scale them first: X / 255, or load with deepnet.data)"
            if xp.isdtype(x.dtype, "integral")
            else ""
        )
        raise InputError(f"{name} must hold floating-point values, got dtype {x.dtype}{hint}")


def check_finite(x: Array, name: str) -> None:
    """No NaN or infinity anywhere in ``x`` (one pass; one scalar read on a GPU)."""
    xp = array_namespace(x)
    if size(x) and not bool(xp.all(xp.isfinite(x))):
        bad = int(xp.count_nonzero(~xp.isfinite(x)))
        raise InputError(f"{name} contains {bad} NaN or infinite value(s); clean the data first")


def check_examples(X: Array, Y: Array | None, n_x: int) -> None:
    """X is (n_x, m) with m >= 1 and, if given, Y is (1, m) with labels in {0, 1}."""
    check_float_array(X, "X")
    if len(_shape(X)) != 2 or _shape(X)[0] != n_x:
        raise ShapeError(
            f"X must have shape ({n_x}, m), one example per column, to match the first "
            f"layer's {n_x} inputs; got {_shape(X)}"
        )
    m = _shape(X)[1]
    if m == 0:
        raise ShapeError("X has no examples (0 columns); at least one is needed")
    check_finite(X, "X")
    if Y is None:
        return
    if not hasattr(Y, "shape"):
        raise InputError(f"Y must be an array of shape (1, {m}), got {type(Y).__name__}")
    if _shape(Y) != (1, m):
        raise ShapeError(
            f"Y must have shape (1, {m}), one 0/1 label per column of X; got {_shape(Y)}"
        )
    xp = array_namespace(X, Y)
    if not bool(xp.all((Y == 0) | (Y == 1))):
        raise InputError("Y must hold labels 0 (non-cat) or 1 (cat) only; other values were found")


def check_learning_rate(learning_rate: Any) -> float:
    """A finite number > 0."""
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)):
        raise InputError(f"learning_rate must be a number, got {learning_rate!r}")
    if not math.isfinite(learning_rate) or learning_rate <= 0:
        raise InputError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
    return float(learning_rate)


def check_count(value: Any, name: str, minimum: int = 0) -> int:
    """An integer >= minimum (iterations, batch size, record interval)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)  # NumPy integers too, as layer sizes are


def check_parameters(parameters: Any) -> list[int]:
    """A course parameter dict W1, b1, ..., WL, bL whose shapes chain; returns layer dims."""
    if not isinstance(parameters, dict) or not parameters:
        raise InputError("parameters must be a dict like {'W1': ..., 'b1': ..., ...}")
    L = max(1, (len(parameters) + 1) // 2)  # W1, b1 at least, so the message names them
    expected = {f"{n}{layer}" for layer in range(1, L + 1) for n in "Wb"}
    if set(parameters) != expected:
        raise InputError(
            f"parameters must have keys W1, b1, ..., W{L}, b{L}; got {sorted(parameters)}"
        )
    dims = [_shape(parameters["W1"])[1] if len(_shape(parameters["W1"])) == 2 else -1]
    for layer in range(1, L + 1):
        W, b = parameters[f"W{layer}"], parameters[f"b{layer}"]
        if len(_shape(W)) != 2 or _shape(W)[1] != dims[-1]:
            raise ShapeError(
                f"W{layer} must have shape (n_{layer}, {dims[-1]}) to follow the previous "
                f"layer; got {_shape(W)}"
            )
        if _shape(b) != (_shape(W)[0], 1):
            raise ShapeError(f"b{layer} must have shape ({_shape(W)[0]}, 1); got {_shape(b)}")
        dims.append(_shape(W)[0])
    return dims


def check_linear(A: Array, W: Array, b: Array) -> None:
    """Shapes for Z = W A + b: W (n, k), A (k, m), b (n, 1)."""
    if len(_shape(W)) != 2 or len(_shape(A)) != 2 or _shape(W)[1] != _shape(A)[0]:
        raise ShapeError(
            f"W {_shape(W)} and A {_shape(A)} do not fit W @ A: W must be (n, k) and A (k, m)"
        )
    if _shape(b) != (_shape(W)[0], 1):
        raise ShapeError(f"b must have shape ({_shape(W)[0]}, 1) to match W; got {_shape(b)}")
