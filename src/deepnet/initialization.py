"""Parameter initialisation: drawn on the host with NumPy's legacy generator, then placed.

Drawing on the host with ``RandomState(seed).randn`` (the stream of the course's
``np.random.seed(seed); np.random.randn(...)``) means the CPU and the GPU start from the same
weights, and the course's printed figures are reproduced exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from deepnet.backend import to_device
from deepnet.errors import InputError

Init = Literal["small", "lecun", "zeros", "random", "he"]
INITS: dict[str, str] = {
    "small": "randn * 0.01, as in the step-by-step notebook and the two-layer model",
    "lecun": "randn / sqrt(n_prev), as in the application notebook's L-layer model",
    "zeros": "all zeros: the second course's example of a failed symmetry break",
    "random": "randn * 10: the second course's example of too large weights",
    "he": "randn * sqrt(2 / n_prev): He initialisation, for ReLU layers",
}


def check_layer_dims(layer_dims: Sequence[int]) -> list[int]:
    """Validate layer sizes: at least two, each a positive integer."""
    try:
        dims = list(layer_dims)
    except TypeError:
        raise InputError(
            f"layer_dims must be a sequence of layer sizes like [12288, 7, 1], got {layer_dims!r}"
        ) from None
    if len(dims) < 2:
        raise InputError(f"layer_dims needs at least 2 sizes (input and output), got {dims}")
    for n in dims:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
            raise InputError(f"layer sizes must be positive integers, got {dims}")
    return [int(n) for n in dims]


def check_network(layer_dims: Sequence[int], dtype: str = "float64") -> list[int]:
    """Layer sizes a network can be trained with: :func:`check_layer_dims`, one output unit
    (the sigmoid's P(cat); accuracy and the cost assume it), and parameters that fit in
    :data:`deepnet.model_io.MAX_PARAMETER_BYTES` (checked before any array is drawn)."""
    from deepnet.model_io import MAX_PARAMETER_BYTES, parameter_bytes  # cycle

    dims = check_layer_dims(layer_dims)
    if dims[-1] != 1:
        raise InputError(
            f"the output layer must have 1 unit (one sigmoid: P(cat)), got {dims[-1]} in {dims}"
        )
    need = parameter_bytes(dims, dtype)
    if need > MAX_PARAMETER_BYTES:
        raise InputError(
            f"layer sizes {dims} need {need / 2**30:.3g} GiB of {dtype} parameters, more than "
            f"deepnet trains ({MAX_PARAMETER_BYTES / 2**30:.0f} GiB); use smaller layers"
        )
    return dims


def draw_parameters(layer_dims: Sequence[int], init: Init = "small", seed: int = 1) -> dict:
    """Host (NumPy float64) parameters W1, b1, ..., drawn in layer order from
    ``RandomState(seed)`` (``he`` and ``random`` with seed 3 are the second course's
    ``initialize_parameters_he`` / ``_random`` bit for bit)."""
    dims = check_layer_dims(layer_dims)
    if init not in INITS:
        raise InputError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
    rng = np.random.RandomState(seed)
    parameters = {}
    for layer in range(1, len(dims)):
        shape, n_prev = (dims[layer], dims[layer - 1]), dims[layer - 1]
        if init == "zeros":
            W = np.zeros(shape)
        elif init == "small":
            W = rng.randn(*shape) * 0.01
        elif init == "lecun":
            W = rng.randn(*shape) / np.sqrt(n_prev)
        elif init == "random":
            W = rng.randn(*shape) * 10  # course_tools.initialize_parameters_random's draw
        else:
            W = rng.randn(*shape) * np.sqrt(2.0 / n_prev)  # initialize_parameters_he's draw
        parameters[f"W{layer}"] = W
        parameters[f"b{layer}"] = np.zeros((dims[layer], 1))
    return parameters


def place(parameters: dict, device: str | None = None, dtype: Any = "float64") -> dict:
    """Copy a parameter dict onto a device, in a dtype."""
    return {k: to_device(v, device, dtype) for k, v in parameters.items()}


def initialize_parameters(
    n_x: int,
    n_h: int,
    n_y: int,
    *,
    seed: int = 1,
    init: Init = "small",
    device: str | None = None,
    dtype: Any = "float64",
) -> dict:
    """Parameters of the two-layer LINEAR -> RELU -> LINEAR -> SIGMOID network."""
    return place(draw_parameters([n_x, n_h, n_y], init, seed), device, dtype)


def initialize_parameters_deep(
    layer_dims: Sequence[int],
    *,
    seed: int = 3,
    init: Init = "small",
    device: str | None = None,
    dtype: Any = "float64",
) -> dict:
    """Parameters of an L-layer network; the defaults reproduce the step-by-step notebook.

    The application notebook's L-layer model uses ``seed=1, init="lecun"``.
    """
    return place(draw_parameters(layer_dims, init, seed), device, dtype)
