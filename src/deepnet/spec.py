"""The network, described once: layer sizes, hidden and output activation, initialisation.

Kernels, the fused steps, model files and the command line read a :class:`Network` (or
the activation names it holds) instead of hard-coding ReLU and sigmoid. Each activation is
written once against the Array API: its forward pass, its derivative from Z (the course's
``*_backward(dA, Z)``) and its derivative from its own output A (what the fused step uses,
since it keeps the activations and not Z).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from deepnet.backend import array_namespace
from deepnet.errors import InputError
from deepnet.initialization import INITS, check_layer_dims, draw_parameters

Array = Any
LEAKY_SLOPE = 0.01  # leaky_relu's slope for Z <= 0


def _relu(Z: Array) -> Array:
    return array_namespace(Z).maximum(Z, 0.0)


def _relu_from_z(dA: Array, Z: Array) -> Array:
    return array_namespace(dA, Z).where(Z > 0, dA, 0.0)


def _sigmoid(Z: Array) -> Array:
    xp = array_namespace(Z)
    # exp of a non-positive number never overflows. For Z >= 0 this is the course's formula
    # bit for bit; for Z < 0 it is the same value, rewritten as e^Z / (1 + e^Z). Capping |Z|
    # where e^-|Z| would leave the normal range avoids underflow too, and changes nothing
    # that float arithmetic could tell apart from 0 or 1.
    limit = -math.log(xp.finfo(Z.dtype).smallest_normal)
    e = xp.exp(-xp.clip(xp.abs(Z), max=limit))
    return xp.where(Z >= 0, 1 / (1 + e), e / (1 + e))


def _sigmoid_from_a(dA: Array, A: Array) -> Array:
    return dA * A * (1 - A)


def _tanh(Z: Array) -> Array:
    return array_namespace(Z).tanh(Z)


def _tanh_from_a(dA: Array, A: Array) -> Array:
    return dA * (1 - A * A)


def _leaky(Z: Array) -> Array:
    return array_namespace(Z).where(Z > 0, Z, LEAKY_SLOPE * Z)


def _leaky_grad(dA: Array, Z_or_A: Array) -> Array:  # A > 0 exactly where Z > 0
    return array_namespace(dA, Z_or_A).where(Z_or_A > 0, dA, LEAKY_SLOPE * dA)


@dataclass(frozen=True)
class Activation:
    """An elementwise activation: ``forward(Z)``, ``from_z(dA, Z)`` and ``from_a(dA, A)`` give
    A and dZ (the last two are equal; the fused step keeps A, the course's caches keep Z)."""

    name: str
    forward: Callable[[Array], Array]
    from_z: Callable[[Array, Array], Array]
    from_a: Callable[[Array, Array], Array]


def _from_z_via_a(forward: Callable, from_a: Callable) -> Callable[[Array, Array], Array]:
    return lambda dA, Z: from_a(dA, forward(Z))


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation("relu", _relu, _relu_from_z, _relu_from_z),
    "sigmoid": Activation(
        "sigmoid", _sigmoid, _from_z_via_a(_sigmoid, _sigmoid_from_a), _sigmoid_from_a
    ),
    "tanh": Activation("tanh", _tanh, _from_z_via_a(_tanh, _tanh_from_a), _tanh_from_a),
    "leaky_relu": Activation("leaky_relu", _leaky, _leaky_grad, _leaky_grad),
}
HIDDEN_ACTIVATIONS = tuple(ACTIVATIONS)  # relu (the default), sigmoid, tanh, leaky_relu
OUTPUT_ACTIVATIONS = ("sigmoid",)  # the cost is the binary cross-entropy of a sigmoid output


def activation(name: str, *, output: bool = False) -> Activation:
    """The registered activation ``name`` (an :class:`InputError` naming the choices if not)."""
    allowed = OUTPUT_ACTIVATIONS if output else HIDDEN_ACTIVATIONS
    if name not in allowed:
        where = "output" if output else "hidden"
        raise InputError(f"unknown {where} activation {name!r}; use one of: {', '.join(allowed)}")
    return ACTIVATIONS[name]


@dataclass(frozen=True)
class Network:
    """A fully connected binary classifier: sizes, activations and how weights are drawn."""

    layer_dims: tuple[int, ...]
    hidden: str = "relu"
    output: str = "sigmoid"
    init: str = "lecun"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer_dims", tuple(check_layer_dims(self.layer_dims)))
        activation(self.hidden)
        activation(self.output, output=True)
        if self.init not in INITS:
            raise InputError(f"unknown init {self.init!r}; choose one of: {', '.join(INITS)}")

    @property
    def L(self) -> int:
        """The number of weight layers."""
        return len(self.layer_dims) - 1

    @property
    def activations(self) -> list[str]:
        """One activation name per weight layer, as model files record them."""
        return [self.hidden] * (self.L - 1) + [self.output]

    def draw(self, seed: int) -> dict[str, Any]:
        """Host (NumPy float64) parameters drawn with ``init`` from ``seed``."""
        return draw_parameters(self.layer_dims, self.init, seed)  # type: ignore[arg-type]


def network_from_activations(layer_dims: Sequence[int], names: Any) -> Network | None:
    """The network a model file's ``activations`` list describes, or None if it is not one."""
    dims = check_layer_dims(layer_dims)
    if not isinstance(names, list) or len(names) != len(dims) - 1 or not names:
        return None
    hidden = names[0] if len(names) > 1 else "relu"
    if names != [hidden] * (len(names) - 1) + [names[-1]]:
        return None
    if hidden not in HIDDEN_ACTIVATIONS or names[-1] not in OUTPUT_ACTIVATIONS:
        return None
    return Network(tuple(dims), hidden, names[-1])
