"""The second course's update rules: momentum, Adam and learning-rate decay, with their checks.

Each rule is written twice over, on purpose: once per array (:func:`momentum_update`,
:func:`adam_update`, :func:`l2_gradient`), the formula an optimizer object applies to each
of its tensors, and once over the course's parameter dicts, with the course's names,
signatures and return values (:func:`update_parameters_with_momentum`, ...), built on the
first. Nothing is updated in place (JAX arrays are immutable): every function returns new
arrays, in the dtype and on the device of its inputs. The ``check_*`` functions are the
hyper-parameter checks, public so that other entry points (an optimizer, the CLI) give the
same messages.
"""

from __future__ import annotations

import math
from typing import Any

from deepnet.backend import array_namespace
from deepnet.errors import InputError
from deepnet.kernels import num_layers
from deepnet.validation import check_learning_rate

Array = Any


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_keep_prob(keep_prob: Any) -> float:
    """Dropout's probability of keeping a unit: a number in (0, 1] (1 means no dropout)."""
    value = _number(keep_prob, "keep_prob")
    if not 0 < value <= 1:
        raise InputError(f"keep_prob must be in (0, 1] (1 keeps every unit), got {keep_prob!r}")
    return value


def check_lambd(lambd: Any) -> float:
    """The L2 regularisation strength: a finite number >= 0 (0 means no regularisation)."""
    value = _number(lambd, "lambd")
    if value < 0:
        raise InputError(f"lambd must be >= 0 (0 means no L2 regularisation), got {lambd!r}")
    return value


def check_beta(beta: Any, name: str = "beta") -> float:
    """A moving average's decay (momentum's beta, Adam's beta1 and beta2): in [0, 1)."""
    value = _number(beta, name)
    if not 0 <= value < 1:
        raise InputError(f"{name} must be in [0, 1), e.g. 0.9; got {beta!r}")
    return value


def check_epsilon(epsilon: Any, name: str = "epsilon") -> float:
    """Adam's and the gradient check's epsilon: a finite number > 0."""
    value = _number(epsilon, name)
    if value <= 0:
        raise InputError(f"{name} must be > 0, e.g. 1e-8; got {epsilon!r}")
    return value


def check_t(t: Any) -> int:
    """Adam's update counter: an integer >= 1 (the first update is t = 1)."""
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise InputError(f"t counts Adam's updates from 1: it must be an integer >= 1, got {t!r}")
    return t


def check_decay_rate(decay_rate: Any) -> float:
    """A learning-rate decay's rate: a finite number >= 0; None (a decay without rate) fails."""
    if decay_rate is None:
        raise InputError("a learning-rate decay needs a decay_rate, a finite number >= 0 (e.g. 1)")
    value = _number(decay_rate, "decay_rate")
    if value < 0:
        raise InputError(f"decay_rate must be >= 0, got {decay_rate!r}")
    return value


def _check_epoch(epoch_num: Any) -> float:
    value = _number(epoch_num, "epoch_num")
    if value < 0:
        raise InputError(f"epoch_num must be >= 0, got {epoch_num!r}")
    return value


# --- the per-array formulas (what an optimizer object applies to each tensor) ---------------


def l2_gradient(dw: Array, w: Array, lambd: float, m: int) -> Array:
    """dW + lambd / m * W: the L2 term's share of a weight's gradient (the course's order)."""
    return dw + lambd / m * w


def momentum_update(
    w: Array, dw: Array, v: Array, beta: float, learning_rate: float
) -> tuple[Array, Array]:
    """One momentum step on one array: v = beta v + (1 - beta) dw, then w - lr v; (w, v)."""
    v = beta * v + (1 - beta) * dw
    return w - learning_rate * v, v


def adam_update(
    w: Array,
    dw: Array,
    v: Array,
    s: Array,
    t: int,
    learning_rate: float,
    beta1: float,
    beta2: float,
    epsilon: float,
) -> tuple[Array, Array, Array, Array, Array]:
    """One Adam step on one array; returns (w, v, s, v_corrected, s_corrected).

    v = beta1 v + (1 - beta1) dw, s = beta2 s + (1 - beta2) dw^2, v_hat = v / (1 - beta1^t),
    s_hat = s / (1 - beta2^t), w - lr v_hat / (sqrt(s_hat) + epsilon): the course's order.
    """
    xp = array_namespace(w, dw, v, s)
    v = beta1 * v + (1 - beta1) * dw
    v_corrected = v / (1 - beta1**t)
    s = beta2 * s + (1 - beta2) * dw**2
    s_corrected = s / (1 - beta2**t)
    w = w - learning_rate * v_corrected / (xp.sqrt(s_corrected) + epsilon)
    return w, v, s, v_corrected, s_corrected


# --- the course's functions over parameter dicts ---------------------------------------------


def require_keys(table: Any, keys: list[str], name: str) -> None:
    """``table`` must be a dict holding ``keys`` (an InputError naming the missing ones)."""
    missing = [k for k in keys if not isinstance(table, dict) or k not in table]
    if missing:
        raise InputError(
            f"{name} must be a dict with keys {', '.join(keys)}; missing {', '.join(missing)}"
        )


def _state_keys(parameters: dict[str, Array]) -> list[str]:
    # Updates are elementwise: the keys must be the course's, the shapes need not chain.
    if not isinstance(parameters, dict) or not parameters:
        raise InputError("parameters must be a dict like {'W1': ..., 'b1': ..., ...}")
    L = max(1, (len(parameters) + 1) // 2)
    keys = [f"{name}{layer}" for layer in range(1, L + 1) for name in ("W", "b")]
    if sorted(parameters) != sorted(keys):
        raise InputError(
            f"parameters must have keys W1, b1, ..., W{L}, b{L}; got {sorted(parameters)}"
        )
    return [f"d{k}" for k in keys]


def _zeros_like_parameters(parameters: dict[str, Array]) -> dict[str, Array]:
    _state_keys(parameters)
    xp = array_namespace(*parameters.values())
    return {
        f"d{name}{layer}": xp.zeros_like(parameters[f"{name}{layer}"])
        for layer in range(1, num_layers(parameters) + 1)
        for name in ("W", "b")
    }


def initialize_velocity(parameters: dict[str, Array]) -> dict[str, Array]:
    """Momentum's velocities v["dW1"], v["db1"], ...: zeros shaped like each parameter."""
    return _zeros_like_parameters(parameters)


def update_parameters_with_momentum(
    parameters: dict[str, Array],
    grads: dict[str, Array],
    v: dict[str, Array],
    beta: float,
    learning_rate: float,
) -> tuple[dict[str, Array], dict[str, Array]]:
    """One momentum step on every layer; returns new (parameters, v) as the course does."""
    beta = check_beta(beta)
    learning_rate = check_learning_rate(learning_rate)
    keys = _state_keys(parameters)
    require_keys(grads, keys, "grads")
    require_keys(v, keys, "v (from initialize_velocity)")
    new_parameters, new_v = {}, {}
    for layer in range(1, num_layers(parameters) + 1):
        for name in ("W", "b"):
            key = f"{name}{layer}"
            new_parameters[key], new_v[f"d{key}"] = momentum_update(
                parameters[key], grads[f"d{key}"], v[f"d{key}"], beta, learning_rate
            )
    return new_parameters, new_v


def initialize_adam(parameters: dict[str, Array]) -> tuple[dict[str, Array], dict[str, Array]]:
    """Adam's moments (v, s), each with keys dW1, db1, ...: zeros shaped like each parameter."""
    return _zeros_like_parameters(parameters), _zeros_like_parameters(parameters)


def update_parameters_with_adam(
    parameters: dict[str, Array],
    grads: dict[str, Array],
    v: dict[str, Array],
    s: dict[str, Array],
    t: int,
    learning_rate: float = 0.01,
    beta1: float = 0.9,
    beta2: float = 0.999,
    epsilon: float = 1e-8,
) -> tuple[dict[str, Array], dict[str, Array], dict[str, Array], dict, dict]:
    """One Adam step (t counts updates from 1), bias-corrected as in the course.

    Returns new (parameters, v, s, v_corrected, s_corrected), the course's five values.
    """
    t = check_t(t)
    learning_rate = check_learning_rate(learning_rate)
    beta1 = check_beta(beta1, "beta1")
    beta2 = check_beta(beta2, "beta2")
    epsilon = check_epsilon(epsilon)
    keys = _state_keys(parameters)
    require_keys(grads, keys, "grads")
    require_keys(v, keys, "v (from initialize_adam)")
    require_keys(s, keys, "s (from initialize_adam)")
    out: tuple[dict, dict, dict, dict, dict] = ({}, {}, {}, {}, {})
    for layer in range(1, num_layers(parameters) + 1):
        for name in ("W", "b"):
            key, dkey = f"{name}{layer}", f"d{name}{layer}"
            w, v_new, s_new, v_hat, s_hat = adam_update(
                parameters[key], grads[dkey], v[dkey], s[dkey], t,
                learning_rate, beta1, beta2, epsilon,
            )  # fmt: skip
            out[0][key] = w
            for table, value in zip(out[1:], (v_new, s_new, v_hat, s_hat), strict=True):
                table[dkey] = value
    return out


def update_lr(learning_rate0: float, epoch_num: float, decay_rate: float) -> float:
    """The decayed learning rate lr0 / (1 + decay_rate * epoch_num), in the course's order."""
    learning_rate0 = check_learning_rate(learning_rate0)
    decay_rate = check_decay_rate(decay_rate)
    return 1 / (1 + decay_rate * _check_epoch(epoch_num)) * learning_rate0


def schedule_lr_decay(
    learning_rate0: float, epoch_num: float, decay_rate: float, time_interval: float = 1000
) -> float:
    """Decay by steps: lr0 / (1 + decay_rate * floor(epoch_num / time_interval))."""
    learning_rate0 = check_learning_rate(learning_rate0)
    decay_rate = check_decay_rate(decay_rate)
    interval = _number(time_interval, "time_interval")
    if interval <= 0:
        raise InputError(f"time_interval must be > 0 epochs, got {time_interval!r}")
    steps = math.floor(_check_epoch(epoch_num) / interval)
    return 1 / (1 + decay_rate * steps) * learning_rate0
