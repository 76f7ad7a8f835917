"""Training loops: the course's ``two_layer_model`` and ``L_layer_model`` on any device.

One code path serves every backend. The data go to the device once; each iteration runs
:func:`train_step`, which fuses the course's forward, cost, backward and update into the
fewest array operations: no gradient for the input layer (nobody needs dX), ``dZL = AL - Y``
instead of going through dAL, ReLU masks taken from the activations, and no Z kept.
A scalar is read back from the device only when a cost is recorded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import numpy as np

from deepnet import cuda_step
from deepnet.backend import array_namespace, device_of, is_host_array, to_device, to_numpy
from deepnet.errors import DivergenceError, InputError
from deepnet.fastpath import GramSteps, use_gram
from deepnet.initialization import Init, check_layer_dims, draw_parameters
from deepnet.step import in_course_order, input_product, step_above_input
from deepnet.validation import (
    check_count,
    check_examples,
    check_float_array,
    check_learning_rate,
)

Array = Any
DTYPES = ("float64", "float32")


def train_step(
    parameters: dict[str, Array], X: Array, Y: Array, learning_rate: float
) -> tuple[dict[str, Array], Array]:
    """One gradient-descent step on (X, Y); returns (new parameters, cost before the step).

    The cost is a 0-d device array, computed from the logits (stable when the output
    saturates); reading it with ``float()`` is the only point that waits for the device.
    """
    if cuda_step.accepts(parameters, X, Y):  # CuPy arrays: fused kernels and CUDA graphs
        return cuda_step.cuda_train_step(parameters, X, Y, learning_rate)
    W1 = parameters["W1"]
    updated, G1, cost = step_above_input(parameters, input_product(W1, X), Y, learning_rate)
    # dW1 = G1 @ X.T. Scaling the small G1 (n1 x m) by the learning rate, rather than the
    # n1 x 12288 product, saves one pass over a W1-sized temporary. X.T is a view: no copy.
    updated["W1"] = W1 - (learning_rate * G1) @ X.T
    return in_course_order(updated), cost


def batch_order(m: int, batch_size: int | None, seed: int, epoch: int) -> list[np.ndarray] | None:
    """Column indices of each mini-batch of one epoch (None for full batch).

    The shuffle depends only on (seed, epoch), so a resumed run sees the same batches.
    """
    if batch_size is None or batch_size >= m:
        return None
    order = np.random.RandomState([seed, epoch]).permutation(m)
    return [order[i : i + batch_size] for i in range(0, m, batch_size)]


def take_columns(xp: Any, X: Array, cols: Array) -> Array:
    """``X[:, cols]``, gathered along whichever axis is contiguous in memory.

    Picture data arrive example-major (each column contiguous, as ``images.reshape(m, -1).T``
    gives). Gathering such columns directly walks memory with a 12288-row stride, 200x slower
    than gathering the rows of the transpose; for C-ordered X it is the other way round.
    """
    flags = getattr(X, "flags", None)  # NumPy and CuPy expose the layout; others may not
    if flags is not None and flags.f_contiguous and not flags.c_contiguous:
        return xp.take(X.T, cols, axis=0).T
    return xp.take(X, cols, axis=1)


@dataclass
class TrainState:
    """Everything needed to continue a run: parameters, costs so far, next iteration."""

    parameters: dict[str, Array]
    costs: list[float] = field(default_factory=list)
    iteration: int = 0
    stopped_early: bool = False  # True when should_stop() ended the run before the last iteration


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
    learning_rate: float,
    num_iterations: int,
    batch_size: int | None = None,
    seed: int = 1,
    record_every: int = 100,
    print_cost: bool = False,
    callback: Callable[[TrainState, float], None] | None = None,
    checkpoint_every: int | None = None,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    gram: bool | None = None,
) -> TrainState:
    """Run iterations ``state.iteration .. num_iterations - 1`` on device-resident X, Y.

    One iteration is one pass over the data (one step at full batch). Every
    ``record_every`` iterations, and at the last one, the cost before that iteration's
    update is recorded, printed if asked, and passed to ``callback(state, cost)``.
    Every ``checkpoint_every`` iterations ``on_checkpoint(state)`` gets the state to resume
    from; after each iteration ``should_stop()`` may end the run early (a signal handler's
    flag), returning a state with ``stopped_early=True``. Passing a returned state back in
    continues exactly where it stopped: the batch order depends only on (seed, iteration).
    Raises :class:`DivergenceError`, keeping the last finite parameters, when the cost
    turns NaN or infinite. ``gram`` picks the full-batch Gram path of
    :mod:`deepnet.fastpath` (same steps, the first layer tracked through X.T @ X):
    None uses it where it is valid and pays, True wherever valid, False never.
    """
    learning_rate = check_learning_rate(learning_rate)
    check_count(num_iterations, "num_iterations")
    check_count(record_every, "record_every", minimum=1)
    if batch_size is not None:
        check_count(batch_size, "batch_size", minimum=1)
    if checkpoint_every is not None:
        check_count(checkpoint_every, "checkpoint_every", minimum=1)
    n1, left = state.parameters["W1"].shape[0], num_iterations - state.iteration
    if left > 0 and use_gram(gram, X, batch_size, n1, left):
        steps: _Steps = GramSteps(state.parameters, X, Y, learning_rate)
    else:
        steps = _PlainSteps(state.parameters, X, Y, learning_rate, batch_size, seed)
    costs = list(state.costs)
    # Parameters whose cost was last seen finite (a cheap mark): what a diverged run keeps.
    good, good_iteration = steps.mark(), state.iteration
    cost = None
    # Overflow shows up below as a non-finite cost, with a clearer message than NumPy's.
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(state.iteration, num_iterations):
            mark_in = steps.mark()
            cost = steps.run(i)
            if i % record_every == 0:
                value = float(cost)  # the one device->host read, only when a cost is recorded
                _check_finite(value, i, partial(steps.parameters, good), good_iteration, costs)
                good, good_iteration = mark_in, i
                costs.append(value)
                if print_cost:
                    print(f"Cost after iteration {i}: {value}")
                if callback is not None:
                    callback(TrainState(steps.parameters(), costs, i + 1), value)
            done = i + 1
            if on_checkpoint is not None and checkpoint_every and done % checkpoint_every == 0:
                on_checkpoint(TrainState(steps.parameters(), list(costs), done))
            if should_stop is not None and done < num_iterations and should_stop():
                return TrainState(steps.parameters(), costs, done, stopped_early=True)
    if cost is not None and (num_iterations - 1) % record_every != 0:
        _check_finite(
            float(cost), num_iterations - 1, partial(steps.parameters, good), good_iteration, costs
        )
    return TrainState(steps.parameters(), costs, max(num_iterations, state.iteration))


class _Steps(Protocol):
    """How fit advances the parameters: one iteration at a time, read back on demand."""

    def run(self, iteration: int) -> Array:
        """Run one iteration (one pass over the data); return its cost, a 0-d array."""

    def mark(self) -> Any:
        """A cheap handle on the current parameters."""

    def parameters(self, mark: Any = None) -> dict[str, Array]:
        """The parameters now, or as they were at ``mark``."""


class _PlainSteps:
    """Iterations of :func:`train_step`, full batch or seeded mini-batches."""

    def __init__(
        self, parameters: dict, X: Array, Y: Array, lr: float, batch_size: int | None, seed: int
    ) -> None:
        self.params, self.X, self.Y, self.lr = parameters, X, Y, lr
        self.batch_size, self.seed = batch_size, seed

    def run(self, iteration: int) -> Array:
        X, Y, m = self.X, self.Y, self.X.shape[1]
        batches = batch_order(m, self.batch_size, self.seed, iteration)
        if batches is None:
            self.params, cost = train_step(self.params, X, Y, self.lr)
            return cost
        xp = array_namespace(X, Y)
        cost = 0.0
        for idx in batches:
            cols = xp.asarray(idx)  # a small host->device copy of the batch's indices
            Xb, Yb = take_columns(xp, X, cols), xp.take(Y, cols, axis=1)
            self.params, batch_cost = train_step(self.params, Xb, Yb, self.lr)
            cost = cost + batch_cost * (len(idx) / m)
        return cost

    def mark(self) -> dict[str, Array]:
        return self.params

    def parameters(self, mark: dict[str, Array] | None = None) -> dict[str, Array]:
        return self.params if mark is None else mark


def _check_finite(
    value: float, iteration: int, good_params: Any, good_iteration: int, costs: list
) -> None:
    """Raise DivergenceError for a non-finite cost; ``good_params`` may be a callable
    giving the kept parameters, so that they are only materialised when needed."""
    if not math.isfinite(value):
        if callable(good_params):
            good_params = good_params()
        raise DivergenceError(
            f"training diverged: the cost became {value} at iteration {iteration}; "
            "try a smaller learning rate. The parameters kept are those of iteration "
            f"{good_iteration}, the last whose cost was finite.",
            iteration=iteration,
            parameters=good_params,
            costs=list(costs),
        )


def train(
    X: Array,
    Y: Array,
    layers_dims: Sequence[int],
    *,
    init: Init,
    seed: int,
    learning_rate: float,
    num_iterations: int,
    device: str | None = None,
    dtype: str = "float64",
    start: TrainState | None = None,
    **fit_options: Any,
) -> TrainState:
    """Check the inputs, put the data on the device once, then :func:`fit`.

    The common body of the model functions and of ``deepnet train``: a run starts from
    ``draw_parameters(layers_dims, init, seed)``, or continues from ``start`` (a checkpoint's
    parameters, costs and next iteration). ``fit_options`` go to :func:`fit` (batch size,
    recording, callback, checkpoint and stop hooks, ``gram``).
    """
    dims = check_layer_dims(layers_dims)
    check_float_array(X, "X")  # before the cast: integer pixels must be scaled by the caller
    X, Y = prepare(X, Y, device, dtype)
    check_examples(X, Y, dims[0])
    if start is None:
        state = TrainState(like(draw_parameters(dims, init, seed), X))
    else:
        state = TrainState(like(start.parameters, X), list(start.costs), start.iteration)
    return fit(
        X, Y, state, learning_rate=learning_rate, num_iterations=num_iterations, seed=seed,
        **fit_options,
    )  # fmt: skip


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
) -> tuple[dict[str, Array], list[float]]:
    """LINEAR -> RELU -> LINEAR -> SIGMOID, trained as in the course; returns (parameters, costs).

    ``layers_dims`` is ``(n_x, n_h, n_y)``. Costs are recorded every ``record_every``
    iterations, iteration 0 first, before that iteration's update.
    """
    if len(layers_dims) != 3:
        raise InputError(
            f"two_layer_model takes layers_dims = (n_x, n_h, n_y), got {tuple(layers_dims)}"
        )
    state = train(
        X, Y, layers_dims, init=init, seed=seed, learning_rate=learning_rate,
        num_iterations=num_iterations, print_cost=print_cost, device=device, dtype=dtype,
        batch_size=batch_size, record_every=record_every, callback=callback, gram=gram,
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
) -> tuple[dict[str, Array], list[float]]:
    """[LINEAR -> RELU] x (L-1) -> LINEAR -> SIGMOID, trained as in the course.

    Returns (parameters, costs); the defaults (seed 1, 1/sqrt(n_prev) initialisation)
    reproduce the application notebook.
    """
    state = train(
        X, Y, layers_dims, init=init, seed=seed, learning_rate=learning_rate,
        num_iterations=num_iterations, print_cost=print_cost, device=device, dtype=dtype,
        batch_size=batch_size, record_every=record_every, callback=callback, gram=gram,
    )  # fmt: skip
    return state.parameters, state.costs
