"""The parameter update as one object: state in, state out, and what a fast path may assume.

An optimizer turns gradients into new parameters. Every way of training (in-memory steps,
the Gram path, streaming, MPI) calls the same :meth:`Optimizer.update`, so a new rule
(momentum, Adam, L2, a decay schedule) is one class here and no change to the loop.

Its state (velocities, moments, counters) is a flat ``dict[str, array | int | float]``:
arrays keyed like the parameters they follow, so a checkpoint can store it on the host and
hand it back exactly (:func:`state_to_host`, :func:`state_on`).

W1's update in factored form. ``dW1 = G1 @ X.T + weight * W1`` with ``G1 = dZ1 / m``
(n1 x m) and ``weight = lambd / m`` the L2 term (0 without L2). An optimizer may offer
``input_step(G1, state, iteration, weight=0.0) -> (H1, decay, state)`` meaning
``W1 <- decay * W1 - H1 @ X.T``: the step then never forms the 12288-wide dW1, and the
Gram path (:mod:`deepnet.fastpath`) can track ``W1 @ X`` through ``X.T @ X``. Two flags say
where that form is exact:

- ``keeps_input_update_linear``: exact while X stays the same from step to step (full
  batch): gradient descent, momentum (a velocity kept as ``V @ X.T``), L2 (``decay``),
  learning-rate schedules. The Gram path runs only these (:func:`deepnet.fastpath.supports`).
- ``factored_per_batch``: exact even when X changes at every step (mini-batches): only
  rules whose H1 depends on this step's G1 alone (gradient descent, L2, schedules; not
  momentum, whose velocity mixes batches).

An optimizer with neither flag (Adam: elementwise in dW1) gets ``dW1`` through
:meth:`Optimizer.update` like every other gradient.

The rules themselves: :class:`GradientDescent` here, momentum, Adam and the learning-rate
schedules in :mod:`deepnet.optimizers`. Each takes an optional ``decay`` (an object with
``learning_rate(lr0, epoch)`` and ``config()``, :class:`deepnet.optimizers.Decay`): the
learning rate of iteration ``i`` is ``decay.learning_rate(lr0, i)``, a function of the
iteration alone, so a resumed run decays exactly as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import array_api_compat
import numpy as np

from deepnet.backend import array_namespace, to_numpy
from deepnet.validation import check_learning_rate

Array = Any
State = dict[str, Any]


def gd_update(parameters: dict[str, Array], grads: dict[str, Array], learning_rate: float) -> dict:
    """``p - lr * dp`` for every parameter with a gradient ``d<name>``; the others unchanged.

    The one gradient-descent formula (the course's ``update_parameters``). The result is in
    the course's order W1, b1, W2, ... whatever order the inputs came in.
    """
    out = {}
    for key in sorted(parameters, key=_course_key):
        grad = grads.get(f"d{key}")
        out[key] = parameters[key] if grad is None else parameters[key] - learning_rate * grad
    return out


def _course_key(name: str) -> tuple[int, str]:
    return int(name[1:]), name[0]


@runtime_checkable
class Optimizer(Protocol):
    """What the training loop needs from an update rule."""

    name: str
    keeps_input_update_linear: bool
    factored_per_batch: bool

    def init_state(self, parameters: dict[str, Array]) -> State:
        """The state before the first update (arrays on the parameters' device)."""

    def update(
        self, parameters: dict[str, Array], grads: dict[str, Array], state: State, iteration: int
    ) -> tuple[dict[str, Array], State]:
        """New parameters (those without a gradient unchanged) and the new state."""

    def config(self) -> dict[str, Any]:
        """The hyper-parameters as JSON values (for model files and checkpoints)."""


class Scheduled:
    """What every rule here shares: a learning rate, optionally decayed per epoch."""

    name = "?"

    def __init__(self, learning_rate: float, decay: Any = None) -> None:
        self.learning_rate = check_learning_rate(learning_rate)
        self.decay = decay

    def rate(self, iteration: int) -> float:
        """The learning rate of ``iteration`` (the decayed one when there is a decay)."""
        if self.decay is None:
            return self.learning_rate
        return self.decay.learning_rate(self.learning_rate, iteration)

    def init_state(self, parameters: dict[str, Array]) -> State:
        """No state before the first update (arrays appear as the updates need them)."""
        return {}

    def config(self) -> dict[str, Any]:
        """``{"name": ..., "learning_rate": lr, ...hyper-parameters, "decay": ... or None}``."""
        decay = None if self.decay is None else self.decay.config()
        return {"name": self.name, "learning_rate": self.learning_rate, **self.hyper(),
                "decay": decay}  # fmt: skip

    def hyper(self) -> dict[str, Any]:
        """The rule's own hyper-parameters (none for gradient descent)."""
        return {}

    def __repr__(self) -> str:
        args = {"learning_rate": self.learning_rate, **self.hyper()}
        if self.decay is not None:
            args["decay"] = self.decay
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in args.items())})"


class GradientDescent(Scheduled):
    """Plain gradient descent, ``W <- W - lr dW``: the course's update. No state."""

    name = "gd"
    keeps_input_update_linear = True
    factored_per_batch = True

    def update(
        self, parameters: dict[str, Array], grads: dict[str, Array], state: State, iteration: int
    ) -> tuple[dict[str, Array], State]:
        """:func:`gd_update` on every parameter that has a gradient."""
        return gd_update(parameters, grads, self.rate(iteration)), state

    def input_step(
        self, G1: Array, state: State, iteration: int, weight: float = 0.0
    ) -> tuple[Array, float, State]:
        """``(H1, decay, state)`` with W1's update ``decay * W1 - H1 @ X.T``: ``lr * G1`` and
        ``1 - lr * weight`` (the L2 term ``weight * W1`` of dW1; 1 without L2).

        Scaling ``G1`` (n1 x m) rather than the n1 x 12288 product saves a pass over a
        W1-sized temporary.
        """
        lr = self.rate(iteration)
        return lr * G1, (1.0 - lr * weight) if weight else 1.0, state


def is_plain_gd(optimizer: Any) -> bool:
    """True for :class:`GradientDescent` itself without a decay (what the fused CUDA step
    implements)."""
    return type(optimizer) is GradientDescent and optimizer.decay is None


def input_step(
    optimizer: Any, G1: Array, state: State, iteration: int, weight: float = 0.0
) -> tuple[Array, float, State]:
    """``optimizer.input_step`` (``(H1, decay, state)``), passing the L2 ``weight`` only when
    there is one (optimizers written before L2 take three arguments)."""
    if weight:
        return optimizer.input_step(G1, state, iteration, weight)
    return optimizer.input_step(G1, state, iteration)


def state_to_host(state: State) -> State:
    """The state with every array copied to a NumPy array (exact): for checkpoints."""
    return {k: v if isinstance(v, (int, float, str)) else to_numpy(v) for k, v in state.items()}


def state_on(state: State, like: Array) -> State:
    """A host state placed in ``like``'s namespace, dtype and device (undoes state_to_host)."""
    xp, where = array_namespace(like), array_api_compat.device(like)
    return {
        k: xp.asarray(v, dtype=like.dtype, device=where) if isinstance(v, np.ndarray) else v
        for k, v in state.items()
    }
