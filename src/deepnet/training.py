"""The course's ``two_layer_model`` and ``L_layer_model``, and in-memory :func:`fit`.

The data go to the device once; :func:`fit` builds an in-memory step source
(:mod:`deepnet.engine.sources`) and runs the one loop (:mod:`deepnet.engine.fit`). Each
step fuses the course's forward, cost, backward and update into the fewest array
operations (:mod:`deepnet.step`). A scalar is read back only when a cost is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypedDict, Unpack

import array_api_compat
import numpy as np
from array_api_compat import is_jax_array, is_torch_array

from deepnet import threads
from deepnet.backend import array_namespace, device_of, is_host_array, to_device, to_numpy
from deepnet.constants import DTYPES
from deepnet.early_stopping import EarlyStopping, Watch
from deepnet.engine.fit import LoopOptions, StepSource, TrainState, check_loop_options, run_loop
from deepnet.engine.sources import ParameterSteps, batch_order, memory_source, take_columns
from deepnet.errors import InputError
from deepnet.initialization import Init, check_network, draw_parameters
from deepnet.optim import GradientDescent, Optimizer, state_on
from deepnet.optimizers import make_optimizer as make
from deepnet.regularization import Regularization
from deepnet.validation import check_count, check_examples, check_float_array

__all__ = [
    "DTYPES", "L_layer_model", "StepSource", "TrainState", "TrainingOptions", "batch_order",
    "fit", "like", "make_optimizer", "prepare", "take_columns", "train", "train_step",
    "training_options", "two_layer_model",
]  # fmt: skip

Array = Any


def train_step(
    parameters: dict[str, Array], X: Array, Y: Array, learning_rate: float
) -> tuple[dict[str, Array], Array]:
    """One gradient-descent step on (X, Y); returns (new parameters, cost before the step).

    The cost is a 0-d device array, computed from the logits (stable when the output
    saturates); reading it with ``float()`` is the only point that waits for the device.
    On CuPy arrays it is the fused CUDA step (:mod:`deepnet.cuda`).
    """
    steps = ParameterSteps(parameters, GradientDescent(learning_rate))
    cost = steps.step(X, Y, 0)
    return steps.params, cost


def prepare(
    X: Array, Y: Array, device: str | None, dtype: str, *, backend: Any = None
) -> tuple[Array, Array]:
    """Put X and Y on the training device in the working dtype, copying only if needed.

    Host arrays go to ``device``/``backend`` (resolved by
    :func:`deepnet.backend.resolve_backend`); device arrays stay where they are unless
    ``device`` or ``backend`` names another place. The cast is :func:`to_device`'s, so a
    64-bit dtype JAX cannot hold is refused, never silently narrowed.
    """
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if device is None and backend is None and not is_host_array(X):
        xp = array_namespace(X, Y)  # one library, one device (DeviceError otherwise)
        if is_torch_array(X) or is_jax_array(X):  # stay on X's device; JAX's cast is checked
            where = device_of(X)
            return to_device(X, where, dtype), to_device(Y, where, dtype)
        want = getattr(xp, dtype)
        X = X if X.dtype == want else xp.astype(X, want)
        Y = Y if Y.dtype == want else xp.astype(Y, want)
        return X, Y
    X = to_device(X, device, dtype, backend=backend)
    return X, to_device(Y, device, dtype, backend=backend)


def like(host: dict[str, np.ndarray], X: Array) -> dict[str, Array]:
    """Host parameters placed in X's namespace, dtype and device."""
    xp, where = array_namespace(X), array_api_compat.device(X)
    return {k: xp.asarray(to_numpy(v), dtype=X.dtype, device=where) for k, v in host.items()}


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
    lambd: float = 0.0,
    keep_prob: float = 1.0,
    early_stopping: EarlyStopping | None = None,
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

    ``lambd`` (L2) and ``keep_prob`` (inverted dropout on the hidden layers, masks seeded
    by (seed, iteration, batch)) are :mod:`deepnet.regularization`'s. ``early_stopping``
    (:class:`deepnet.early_stopping.EarlyStopping`) holds out a seeded validation fraction
    of X, Y, scores it at every recorded iteration and ends the run with the best
    parameters (``state.early_stopping`` says what happened).
    """
    optimizer = make_optimizer(learning_rate, optimizer)
    reg = Regularization(lambd, keep_prob, seed)
    check_loop_options(num_iterations, **options)  # before any work (K, threads)
    if batch_size is not None:
        check_count(batch_size, "batch_size", minimum=1)
    watch = None
    if early_stopping is not None:
        if not isinstance(early_stopping, EarlyStopping):
            raise InputError(f"early_stopping must be an EarlyStopping, got {early_stopping!r}")
        xp = array_namespace(X, Y)
        keep, held = (xp.asarray(i) for i in early_stopping.split(X.shape[1], seed))
        watch = Watch(early_stopping, take_columns(xp, X, held), xp.take(Y, held, axis=1), hidden)
        watch.restore(state.resume)
        X, Y = take_columns(xp, X, keep), xp.take(Y, keep, axis=1)
        options = watched(watch, options)
    source = memory_source(
        state.parameters, X, Y, optimizer, hidden=hidden, batch_size=batch_size, seed=seed,
        gram=gram, iterations_left=num_iterations - state.iteration, resume=state.resume,
        reg=reg,
    )  # fmt: skip
    state = run_loop(source, state, num_iterations=num_iterations, **options)
    if watch is None:
        return state
    state.resume = {**state.resume, **watch.state()}
    if watch.done or not state.stopped_early:  # finished: the best parameters are the result
        state.stopped_early = False
        if watch.best is not None:
            state.parameters = dict(watch.best)
        state.early_stopping = watch.summary()
    return state


def watched(watch: Watch, options: dict[str, Any]) -> dict[str, Any]:
    """The loop's hooks with early stopping added: score at each record, stop when done,
    and carry the watch's state in every checkpoint."""
    callback, should_stop = options.get("callback"), options.get("should_stop")
    on_checkpoint = options.get("on_checkpoint")

    def record(state: TrainState, cost: float) -> None:
        watch.record(state.parameters, state.iteration - 1)
        if callback is not None:
            callback(state, cost)

    def stop() -> bool:
        return watch.done or (should_stop is not None and should_stop())

    def checkpoint(state: TrainState) -> None:
        state.resume = {**state.resume, **watch.state()}
        on_checkpoint(state)  # type: ignore[misc]

    hooks = {"callback": record, "should_stop": stop}
    if on_checkpoint is not None:
        hooks["on_checkpoint"] = checkpoint
    return {**options, **hooks}


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
    dims = check_network(layers_dims, dtype)
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


class TrainingOptions(TypedDict, total=False):
    """The second course's options of the model functions (all optional).

    ``optimizer``: "gd" (default), "momentum" (``beta``), "adam" (``beta1``, ``beta2``,
    ``epsilon``) or a :mod:`deepnet.optim` optimizer object; ``decay_rate``: the course's
    ``update_lr`` decay per iteration, by steps of ``time_interval`` iterations
    (``schedule_lr_decay``) if given; ``lambd``: L2; ``keep_prob``: inverted dropout on
    the hidden layers; ``early_stopping``: True with ``validation_fraction``, ``patience``
    and ``tol``, or an :class:`~deepnet.early_stopping.EarlyStopping` (the parameters
    returned are then the best on the held-out part).
    """

    optimizer: str | Optimizer
    beta: float
    beta1: float
    beta2: float
    epsilon: float
    decay_rate: float | None
    time_interval: float | None
    lambd: float
    keep_prob: float
    early_stopping: bool | EarlyStopping
    validation_fraction: float
    patience: int
    tol: float


def training_options(learning_rate: float, seed: int, **options: Any) -> dict[str, Any]:
    """:class:`TrainingOptions` turned into :func:`fit`'s (optimizer object, lambd, keep_prob,
    early_stopping rule), every value checked."""
    unknown = sorted(set(options) - set(TrainingOptions.__annotations__))
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(unknown)}; the training options are "
                         f"{', '.join(TrainingOptions.__annotations__)}")  # fmt: skip
    rule, asked = None, options.get("early_stopping", False)
    details = {k: options[k] for k in ("validation_fraction", "patience", "tol") if k in options}
    if isinstance(asked, EarlyStopping):
        if details:
            raise InputError("pass validation_fraction, patience and tol to the EarlyStopping "
                             "object itself, not beside it")  # fmt: skip
        rule = asked
    elif asked is True:
        rule = EarlyStopping(**details)
    elif asked is not False:
        raise InputError(f"early_stopping must be True, False or an EarlyStopping, got {asked!r}")
    elif details:
        raise InputError(f"{', '.join(details)} apply only with early_stopping=True")
    optimizer = options.get("optimizer", "gd")
    hyper = {k: options[k] for k in ("beta", "beta1", "beta2", "epsilon", "decay_rate",
                                      "time_interval") if k in options}  # fmt: skip
    if not isinstance(optimizer, str) and hyper:
        raise InputError("pass hyper-parameters to the optimizer object itself, not beside it")
    return {
        "optimizer": make(optimizer, learning_rate, **hyper),
        "lambd": options.get("lambd", 0.0),
        "keep_prob": options.get("keep_prob", 1.0),
        "early_stopping": rule,
    }


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
    **options: Unpack[TrainingOptions],
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
        X, Y, layers_dims, init=init, seed=seed, learning_rate=None,
        num_iterations=num_iterations, print_cost=print_cost, device=device, dtype=dtype,
        batch_size=batch_size, record_every=record_every, callback=callback, gram=gram,
        hidden=hidden, **training_options(learning_rate, seed, **options),
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
    **options: Unpack[TrainingOptions],
) -> tuple[dict[str, Array], list[float]]:
    """[LINEAR -> RELU] x (L-1) -> LINEAR -> SIGMOID, trained as in the course.

    Returns (parameters, costs); the defaults (seed 1, 1/sqrt(n_prev) initialisation)
    reproduce the application notebook. ``hidden`` picks another hidden activation;
    ``options`` are the second course's (:class:`TrainingOptions`): optimizer (``"gd"``,
    ``"momentum"``, ``"adam"`` or an optimizer object, which brings its own learning rate),
    decay, L2 (``lambd``), dropout (``keep_prob``), early stopping.
    """
    state = train(
        X, Y, layers_dims, init=init, seed=seed, learning_rate=None,
        num_iterations=num_iterations, print_cost=print_cost, device=device, dtype=dtype,
        batch_size=batch_size, record_every=record_every, callback=callback, gram=gram,
        hidden=hidden, **training_options(learning_rate, seed, **options),
    )  # fmt: skip
    return state.parameters, state.costs
