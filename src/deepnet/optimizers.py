"""Momentum, Adam and learning-rate decay as optimizers of the engine (:mod:`deepnet.optim`).

Each rule applies the course's per-array formula from :mod:`deepnet.course_updates`
(:func:`~deepnet.course_updates.momentum_update`, :func:`~deepnet.course_updates.update_lr`,
:func:`~deepnet.course_updates.schedule_lr_decay`; Adam's, folded, below) and checks its
hyper-parameters with the same functions, so the messages are the same everywhere. State is
a flat dict (velocities ``v.dW1``, Adam's ``v.*``/``s.*`` and ``t``), created with zeros at
the first update that needs it; a checkpoint stores it exactly.

Adam's engine update is the course's formula with the two bias corrections folded into the
step size and epsilon (:func:`adam_step`, the form PyTorch uses): the moments are the
course's to the bit, the parameters agree to rounding, and each element costs one division
and one square root instead of three divisions and a square root (docs/training-options.md).

Momentum keeps W1's update linear in X (see :mod:`deepnet.optim`): at full batch its
velocity for W1 is kept as ``c * W1 + V @ X.T`` (``V`` is n1 x m, ``c`` the L2 term's share),
which the Gram path can track. Adam is elementwise in dW1 and needs dW1 itself.
"""

from __future__ import annotations

import math
from typing import Any

from deepnet.backend import array_namespace
from deepnet.course_updates import (
    check_beta,
    check_decay_rate,
    check_epsilon,
    momentum_update,
    schedule_lr_decay,
    update_lr,
)
from deepnet.errors import InputError
from deepnet.optim import GradientDescent, Optimizer, Scheduled, State, _course_key

Array = Any
OPTIMIZERS = ("gd", "momentum", "adam")


class Decay:
    """A learning-rate schedule over epochs (one iteration of the loop is one epoch).

    ``Decay(rate)`` is the course's ``update_lr``: ``lr0 / (1 + rate * epoch)``;
    ``Decay(rate, time_interval)`` is ``schedule_lr_decay``: the same with
    ``floor(epoch / time_interval)``.
    """

    def __init__(self, rate: float, time_interval: float | None = None) -> None:
        self.rate = check_decay_rate(rate)
        if time_interval is not None:
            schedule_lr_decay(1.0, 0, self.rate, time_interval)  # the course's check
        self.time_interval = time_interval

    def learning_rate(self, learning_rate0: float, epoch: int) -> float:
        """The learning rate of ``epoch`` (the course's formula, in its order)."""
        if self.time_interval is None:
            return update_lr(learning_rate0, epoch, self.rate)
        return schedule_lr_decay(learning_rate0, epoch, self.rate, self.time_interval)

    def config(self) -> dict[str, Any]:
        """``{"decay_rate": r, "time_interval": n or None}``."""
        return {"decay_rate": self.rate, "time_interval": self.time_interval}

    def __repr__(self) -> str:
        return f"Decay(rate={self.rate!r}, time_interval={self.time_interval!r})"


def _zeros(state: State, key: str, like: Array) -> Array:
    value = state.get(key)
    return array_namespace(like).zeros_like(like) if value is None else value


class Momentum(Scheduled):
    """Gradient descent with momentum: ``v = beta v + (1 - beta) dW``, ``W -= lr v``."""

    name = "momentum"
    keeps_input_update_linear = True  # the velocity of W1 stays c * W1 + V @ X.T
    factored_per_batch = False  # ... but only while X is the same from step to step

    def __init__(self, learning_rate: float, beta: float = 0.9, decay: Any = None) -> None:
        super().__init__(learning_rate, decay)
        self.beta = check_beta(beta)

    def hyper(self) -> dict[str, Any]:
        """``{"beta": beta}``."""
        return {"beta": self.beta}

    def update(
        self, parameters: dict[str, Array], grads: dict[str, Array], state: State, iteration: int
    ) -> tuple[dict[str, Array], State]:
        """:func:`~deepnet.course_updates.momentum_update` on every parameter with a gradient."""
        lr, out, new = self.rate(iteration), {}, dict(state)
        for key in sorted(parameters, key=_course_key):
            grad = grads.get(f"d{key}")
            if grad is None:
                out[key] = parameters[key]
                continue
            v = _zeros(state, f"v.d{key}", grad)
            out[key], new[f"v.d{key}"] = momentum_update(parameters[key], grad, v, self.beta, lr)
        return out, new

    def input_step(
        self, G1: Array, state: State, iteration: int, weight: float = 0.0
    ) -> tuple[Array, float, State]:
        """W1's momentum step in factored form (X fixed): ``(lr V, 1 - lr c, state)``.

        With ``v = c * W1 + V @ X.T`` (the current W1), dW1 = ``G1 @ X.T + weight * W1``
        gives ``c' = beta c + (1 - beta) weight`` and ``V' = beta V + (1 - beta) G1``: the
        course's formula on each part. After ``W1 -= lr v`` the velocity is re-expressed in
        the new W1 (divided by ``1 - lr c'``, exactly 1 without L2).
        """
        lr, beta = self.rate(iteration), self.beta
        c = float(state.get("v.c1", 0.0))
        _, V = momentum_update(0.0, G1, _zeros(state, "v.V1", G1), beta, lr)
        c = beta * c + (1 - beta) * weight if (c or weight) else 0.0
        keep = 1.0 - lr * c
        H = lr * V
        if keep != 1:
            V, c = V / keep, c / keep
        return H, keep, {**state, "v.V1": V, "v.c1": c}


class Adam(Scheduled):
    """Adam with the course's bias correction; ``t`` counts updates from 1."""

    name = "adam"
    keeps_input_update_linear = False  # elementwise in dW1: the Gram path declines it
    factored_per_batch = False

    def __init__(
        self,
        learning_rate: float,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        decay: Any = None,
    ) -> None:
        super().__init__(learning_rate, decay)
        self.beta1 = check_beta(beta1, "beta1")
        self.beta2 = check_beta(beta2, "beta2")
        self.epsilon = check_epsilon(epsilon)

    def hyper(self) -> dict[str, Any]:
        """``{"beta1": .., "beta2": .., "epsilon": ..}``."""
        return {"beta1": self.beta1, "beta2": self.beta2, "epsilon": self.epsilon}

    def update(
        self, parameters: dict[str, Array], grads: dict[str, Array], state: State, iteration: int
    ) -> tuple[dict[str, Array], State]:
        """:func:`adam_step` (the course's Adam, folded) on every parameter with a gradient."""
        lr, out = self.rate(iteration), {}
        t = int(state.get("t", 0)) + 1
        new = {**state, "t": t}
        for key in sorted(parameters, key=_course_key):
            grad = grads.get(f"d{key}")
            if grad is None:
                out[key] = parameters[key]
                continue
            v, s = _zeros(state, f"v.d{key}", grad), _zeros(state, f"s.d{key}", grad)
            out[key], new[f"v.d{key}"], new[f"s.d{key}"] = adam_step(
                parameters[key], grad, v, s, t, lr, self.beta1, self.beta2, self.epsilon
            )
        return out, new


def adam_step(
    w: Array,
    dw: Array,
    v: Array,
    s: Array,
    t: int,
    learning_rate: float,
    beta1: float,
    beta2: float,
    epsilon: float,
) -> tuple[Array, Array, Array]:
    """One Adam step on one array, returning new (w, v, s); no argument is changed.

    ``v`` and ``s`` are computed as :func:`~deepnet.course_updates.adam_update` computes
    them (the same bits). The step ``lr v_hat / (sqrt(s_hat) + eps)`` is written
    ``lr_t v / (sqrt(s) + eps_t)`` with ``lr_t = lr sqrt(1 - beta2^t) / (1 - beta1^t)`` and
    ``eps_t = eps sqrt(1 - beta2^t)``: equal in exact arithmetic, about half the work per
    element, and in-place operators on fresh arrays instead of a new array per operation.
    """
    root = math.sqrt(1 - beta2**t)
    lr_t, eps_t = learning_rate * root / (1 - beta1**t), epsilon * root
    v = v * beta1
    v += dw * (1 - beta1)
    s = s * beta2
    squared = dw**2
    squared *= 1 - beta2
    s += squared
    step = array_namespace(s).sqrt(s)
    step += eps_t
    step = v / step
    step *= lr_t
    return w - step, v, s


def make_optimizer(
    optimizer: str | Optimizer = "gd",
    learning_rate: float | None = None,
    *,
    beta: float = 0.9,
    beta1: float = 0.9,
    beta2: float = 0.999,
    epsilon: float = 1e-8,
    decay_rate: float | None = None,
    time_interval: float | None = None,
) -> Optimizer:
    """An optimizer by name (``gd``, ``momentum``, ``adam``) with its hyper-parameters and
    an optional decay (``decay_rate``; ``time_interval`` makes it the course's
    ``schedule_lr_decay``); an :class:`Optimizer` object is returned as it is."""
    if not isinstance(optimizer, str):
        if not isinstance(optimizer, Optimizer):
            raise InputError(f"optimizer must be one of {', '.join(OPTIMIZERS)} or a "
                             f"deepnet.optim optimizer, got {optimizer!r}")  # fmt: skip
        return optimizer
    if optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {optimizer!r}; use one of: {', '.join(OPTIMIZERS)}")
    if learning_rate is None:
        raise InputError(f"the {optimizer} optimizer needs a learning_rate")
    if time_interval is not None and decay_rate is None:
        raise InputError("a learning-rate decay needs a decay_rate, a finite number >= 0 (e.g. 1)")
    decay = None if decay_rate is None else Decay(decay_rate, time_interval)
    if optimizer == "momentum":
        return Momentum(learning_rate, beta, decay)
    if optimizer == "adam":
        return Adam(learning_rate, beta1, beta2, epsilon, decay)
    return GradientDescent(learning_rate, decay)
