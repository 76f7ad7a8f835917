"""The course's ``two_layer_model`` and ``L_layer_model``, and in-memory :func:`fit`.

The data go to the device once; :func:`fit` builds an in-memory step source
(:mod:`deepnet.engine.sources`) and runs the one loop (:mod:`deepnet.engine.fit`). Each
step fuses the course's forward, cost, backward and update into the fewest array
operations (:mod:`deepnet.step`). A scalar is read back only when a cost is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Unpack

import numpy as np

from deepnet import threads
from deepnet.backend import array_namespace, device_of, is_host_array, to_device, to_numpy
from deepnet.engine.fit import LoopOptions, StepSource, TrainState, check_loop_options, run_loop
from deepnet.engine.sources import ParameterSteps, batch_order, memory_source, take_columns
from deepnet.errors import InputError
from deepnet.initialization import Init, check_layer_dims, draw_parameters
from deepnet.optim import GradientDescent, Optimizer, state_on
from deepnet.validation import check_count, check_examples, check_float_array

__all__ = [
    "DTYPES", "L_layer_model", "StepSource", "TrainState", "batch_order", "fit", "like",
    "make_optimizer", "prepare", "take_columns", "train", "train_step", "two_layer_model",
]  # fmt: skip

Array = Any
DTYPES = ("float64", "float32")


def train_step(
    parameters: dict[str, Array], X: Array, Y: Array, learning_rate: float
) -> tuple[dict[str, Array], Array]:
    """One gradient-descent step on (X, Y); returns (new parameters, cost before the step).

    The cost is a 0-d device array, computed from the logits (stable when the output
    saturates); reading it with ``float()`` is the only point that waits for the device.
    On CuPy arrays it is the fused CUDA step (:mod:`deepnet.cuda_step`).
    """
    steps = ParameterSteps(parameters, GradientDescent(learning_rate))
    cost = steps.step(X, Y, 0)
    return steps.params, cost


def prepare(X: Array, Y: Array, device: str | None, dtype: str) -> tuple[Array, Array]:
    """Put X and Y on the training device in the working dtype, copying only if needed.

    Host arrays go to ``device`` (resolved as usual); device arrays stay where they are
    unless ``device`` names another one.
    """
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if device is None and not is_host_array(X):
        xp = array_namespace(X, Y)
        want = getattr(xp, dtype)
        X = X if X.dtype == want else xp.astype(X, want)
        Y = Y if Y.dtype == want else xp.astype(Y, want)
        return X, Y
    if device is not None and device_of(X) not in ("cpu", device):
        X, Y = to_numpy(X), to_numpy(Y)
    return to_device(X, device, dtype), to_device(Y, device, dtype)


def like(host: dict[str, np.ndarray], X: Array) -> dict[str, Array]:
    """Host parameters placed in X's namespace and dtype."""
    xp = array_namespace(X)
    return {k: xp.asarray(np.asarray(v), dtype=X.dtype) for k, v in host.items()}


def fit(
    X: Array,
    Y: Array,
    state: TrainState,
    *,
    learning_rate: float | None = None,
    num_iterations: int,
    optimizer: Optimizer | None = None,
    hidden: str = "relu",
    batch_size: int | None = None,
    seed: int = 1,
    gram: bool | None = None,
    **options: Unpack[LoopOptions],
) -> TrainState:
    """Run iterations ``state.iteration .. num_iterations - 1`` on device-resident X, Y.

    One iteration is one pass over the data (one step at full batch); the update is
    ``optimizer``'s (default: gradient descent at ``learning_rate``), the hidden
    activation ``hidden``'s. Recording, callbacks, checkpoints, the stop hook and the
    divergence rule are :func:`deepnet.engine.fit.run_loop`'s. Passing a returned state
    back in continues exactly where it stopped: the batch order depends only on
    (seed, iteration), and ``state.resume`` carries the optimizer's and the Gram path's
    state. ``gram`` picks the full-batch Gram path of :mod:`deepnet.fastpath`: None uses
    it where it is valid and pays, True wherever valid, False never.
    """
    optimizer = make_optimizer(learning_rate, optimizer)
    check_loop_options(num_iterations, **options)  # before any work (K, threads)
    if batch_size is not None:
        check_count(batch_size, "batch_size", minimum=1)
    source = memory_source(
        state.parameters, X, Y, optimizer, hidden=hidden, batch_size=batch_size, seed=seed,
        gram=gram, iterations_left=num_iterations - state.iteration, resume=state.resume,
    )  # fmt: skip
    return run_loop(source, state, num_iterations=num_iterations, **options)


def make_optimizer(learning_rate: float | None, optimizer: Optimizer | None) -> Optimizer:
    """``optimizer``, or gradient descent at ``learning_rate`` (one of the two, checked)."""
    if optimizer is None:
        if learning_rate is None:
            raise InputError("pass learning_rate (gradient descent) or an optimizer")
        return GradientDescent(learning_rate)
    if not isinstance(optimizer, Optimizer):
        raise InputError(f"optimizer must be a deepnet.optim optimizer, got {optimizer!r}")
    if learning_rate is not None and learning_rate != getattr(optimizer, "learning_rate", None):
        raise InputError("pass learning_rate or an optimizer (which holds its own), not both")
    return optimizer


def train(
    X: Array,
    Y: Array,
    layers_dims: Sequence[int],
    *,
    init: Init,
    seed: int,
    learning_rate: float | None,
    num_iterations: int,
    device: str | None = None,
    dtype: str = "float64",
    start: TrainState | None = None,
    **fit_options: Any,
) -> TrainState:
    """Check the inputs, put the data on the device once, then :func:`fit`.

    The common body of the model functions and of ``deepnet train``: a run starts from
    ``draw_parameters(layers_dims, init, seed)``, or continues from ``start`` (a checkpoint's
    parameters, costs, next iteration and resume state). ``fit_options`` go to :func:`fit`
    (optimizer, hidden activation, batch size, recording, callback, checkpoint and stop
    hooks, ``gram``).
    """
    dims = check_layer_dims(layers_dims)
    check_float_array(X, "X")  # before the cast: integer pixels must be scaled by the caller
    X, Y = prepare(X, Y, device, dtype)
    check_examples(X, Y, dims[0])
    if start is None:
        state = TrainState(like(draw_parameters(dims, init, seed), X))
    else:
        resume = state_on(dict(start.resume), X)
        state = TrainState(like(start.parameters, X), list(start.costs), start.iteration,
                           resume=resume)  # fmt: skip
    with threads.blas_threads(resume=state.resume) as chosen:  # docs/benchmarks.md, "Threads"
        state = fit(
            X, Y, state, learning_rate=learning_rate, num_iterations=num_iterations, seed=seed,
            **threads.recording(chosen, fit_options),
        )  # fmt: skip
    return threads.stamped(state, chosen)


def two_layer_model(
    X: Array,
    Y: Array,
    layers_dims: Sequence[int],
    learning_rate: float = 0.0075,
    num_iterations: int = 3000,
    print_cost: bool = False,
    *,
    device: str | None = None,
    dtype: str = "float64",
    seed: int = 1,
    init: Init = "small",
    batch_size: int | None = None,
    record_every: int = 100,
    callback: Callable[[TrainState, float], None] | None = None,
    gram: bool | None = None,
    hidden: str = "relu",
) -> tuple[dict[str, Array], list[float]]:
    """LINEAR -> RELU -> LINEAR -> SIGMOID, trained as in the course; returns (parameters, costs).

    ``layers_dims`` is ``(n_x, n_h, n_y)``. Costs are recorded every ``record_every``
    iterations, iteration 0 first, before that iteration's update. ``hidden`` picks another
    hidden activation (:data:`deepnet.spec.HIDDEN_ACTIVATIONS`); predict with the same one.
    """
    if len(layers_dims) != 3:
        raise InputError(
            f"two_layer_model takes layers_dims = (n_x, n_h, n_y), got {tuple(layers_dims)}"
        )
    state = train(
        X, Y, layers_dims, init=init, seed=seed, learning_rate=learning_rate,
        num_iterations=num_iterations, print_cost=print_cost, device=device, dtype=dtype,
        batch_size=batch_size, record_every=record_every, callback=callback, gram=gram,
        hidden=hidden,
    )  # fmt: skip
    return state.parameters, state.costs


def L_layer_model(
    X: Array,
    Y: Array,
    layers_dims: Sequence[int],
    learning_rate: float = 0.0075,
    num_iterations: int = 3000,
    print_cost: bool = False,
    *,
    device: str | None = None,
    dtype: str = "float64",
    seed: int = 1,
    init: Init = "lecun",
    batch_size: int | None = None,
    record_every: int = 100,
    callback: Callable[[TrainState, float], None] | None = None,
    gram: bool | None = None,
    hidden: str = "relu",
) -> tuple[dict[str, Array], list[float]]:
    """[LINEAR -> RELU] x (L-1) -> LINEAR -> SIGMOID, trained as in the course.

    Returns (parameters, costs); the defaults (seed 1, 1/sqrt(n_prev) initialisation)
    reproduce the application notebook. ``hidden`` picks another hidden activation.
    """
    state = train(
        X, Y, layers_dims, init=init, seed=seed, learning_rate=learning_rate,
        num_iterations=num_iterations, print_cost=print_cost, device=device, dtype=dtype,
        batch_size=batch_size, record_every=record_every, callback=callback, gram=gram,
        hidden=hidden,
    )  # fmt: skip
    return state.parameters, state.costs
