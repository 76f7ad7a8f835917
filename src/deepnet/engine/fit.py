"""The one training loop: recording, divergence, progress, checkpoints, stop and resume.

Every way of training is a *step source* (:class:`StepSource`): it runs one iteration and
hands back its cost, a cheap mark of the parameters, the parameters themselves, and the
exact state a continuation needs (optimizer state, a fast path's own arrays).
:func:`run_loop` does the rest, the same for every source.

Divergence rule: a recorded cost that is not finite, or that exceeds
``DIVERGENCE_FACTOR * max(first recorded cost, ln 2)``. The cross-entropy of a network that
has learnt nothing is about ln 2 (0.693); a cost ten times its start (about 7 nats per
example) means the updates are throwing the output to confident wrong answers, which
gradient descent at a sane learning rate never does. The run stops with
:class:`DivergenceError`, keeping the parameters of the last iteration whose cost was good.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from time import monotonic
from typing import Any, Protocol, TypedDict, Unpack

import numpy as np

from deepnet.errors import DivergenceError, InputError
from deepnet.validation import check_count

Array = Any
DIVERGENCE_FACTOR = 10.0


@dataclass
class TrainState:
    """Everything needed to continue a run: parameters, costs so far, next iteration.

    ``resume`` holds what the step source needs beyond the parameters to continue exactly
    (the optimizer's state as ``opt.*``, the Gram path's arrays as ``gram.*``): arrays on
    the training device, or on the host after a checkpoint.
    """

    parameters: dict[str, Array]
    costs: list[float] = field(default_factory=list)
    iteration: int = 0
    stopped_early: bool = False  # True when should_stop() ended the run before the last iteration
    resume: dict[str, Any] = field(default_factory=dict)
    # Set by early stopping (deepnet.early_stopping.Watch.summary): best iteration, scores.
    early_stopping: dict[str, Any] | None = None


class StepSource(Protocol):
    """How the loop advances the parameters: one iteration at a time, read back on demand."""

    def run(self, iteration: int) -> Array:
        """Run one iteration (one pass over the data); return its cost, a 0-d array."""

    def mark(self) -> Any:
        """A cheap handle on the current parameters."""

    def parameters(self, mark: Any = None) -> dict[str, Array]:
        """The parameters now, or as they were at ``mark``."""

    def resume_state(self) -> dict[str, Any]:
        """What continuing exactly needs beyond the parameters (see TrainState.resume)."""

    def close(self) -> None:
        """Release threads, files or buffers."""


class LoopOptions(TypedDict, total=False):
    """The loop's keyword options, the same for every source (see :func:`run_loop`)."""

    record_every: int
    print_cost: bool
    callback: Callable[[TrainState, float], None] | None
    checkpoint_every: int | None
    checkpoint_seconds: float | None
    on_checkpoint: Callable[[TrainState], None] | None
    should_stop: Callable[[], bool] | None
    on_step: Callable[[int], None] | None
    on_batch: Callable[[int], None] | None


def check_loop_options(
    num_iterations: Any,
    record_every: Any = 100,
    checkpoint_every: Any = None,
    checkpoint_seconds: Any = None,
    **_: Any,
) -> None:
    """The loop's own arguments, checked once for every source (other options ignored)."""
    check_count(num_iterations, "num_iterations")
    check_count(record_every, "record_every", minimum=1)
    if checkpoint_every is not None:
        check_count(checkpoint_every, "checkpoint_every", minimum=1)
    if checkpoint_seconds is not None and (
        isinstance(checkpoint_seconds, bool)
        or not isinstance(checkpoint_seconds, int | float)
        or not math.isfinite(checkpoint_seconds)
        or checkpoint_seconds < 0
    ):
        raise InputError(
            f"checkpoint_seconds must be a finite number of seconds >= 0 (0 or None: none by "
            f"time), got {checkpoint_seconds!r}"
        )


def divergence_limit(costs: list[float], value: float) -> float:
    """The largest cost a run whose first recorded cost is ``costs[0]`` may record."""
    first = costs[0] if costs else value
    return DIVERGENCE_FACTOR * max(first, math.log(2))


def run_loop(
    source: StepSource, state: TrainState, *, num_iterations: int, **options: Unpack[LoopOptions]
) -> TrainState:
    """Run iterations ``state.iteration .. num_iterations - 1`` of ``source``.

    Every ``record_every`` iterations, and at the last one, the cost before that
    iteration's update is recorded, checked (see the module's divergence rule), printed if
    asked, and passed to ``callback(state, cost)``. After each iteration ``on_step(done)``
    hears how many iterations are done (a host int: no device value is read for it), and
    after each mini-batch step ``on_batch(examples)`` the size of that batch (its shape).
    Every ``checkpoint_every`` iterations, and after each iteration that ends
    ``checkpoint_seconds`` or more after the last checkpoint (or the start),
    ``on_checkpoint(state)`` gets a state to resume from; after each iteration
    ``should_stop()`` may end the run early (``stopped_early=True``). Passing a returned
    state back in, with a source built from it, continues exactly where it stopped.
    The source is closed on the way out (also when an option is refused).
    """
    try:
        return _loop(source, state, num_iterations, **options)
    finally:
        source.close()


def _loop(
    source: StepSource,
    state: TrainState,
    num_iterations: int,
    record_every: int = 100,
    print_cost: bool = False,
    callback: Callable[[TrainState, float], None] | None = None,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float | None = None,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_step: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> TrainState:
    check_loop_options(num_iterations, record_every, checkpoint_every, checkpoint_seconds)
    if on_batch is not None:
        _count_batches(source, on_batch)
    interval = float(checkpoint_seconds or 0) if on_checkpoint is not None else 0.0
    last_checkpoint = monotonic()
    costs = list(state.costs)
    # Parameters whose cost was last seen good (a cheap mark): what a diverged run keeps.
    good, good_iteration = source.mark(), state.iteration
    cost = None

    def snapshot(done: int, stopped: bool = False) -> TrainState:
        return TrainState(source.parameters(), list(costs), done, stopped, source.resume_state())

    # Overflow shows up below as a non-finite cost, with a clearer message than NumPy's.
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(state.iteration, num_iterations):
            mark_in = source.mark()
            cost = source.run(i)
            if i % record_every == 0:
                value = float(cost)  # the one device->host read, only when recorded
                _check(value, i, partial(source.parameters, good), good_iteration, costs)
                good, good_iteration = mark_in, i
                costs.append(value)
                if print_cost:
                    print(f"Cost after iteration {i}: {value}", flush=True)
                if callback is not None:
                    callback(TrainState(source.parameters(), costs, i + 1), value)
            done = i + 1
            if on_step is not None:
                on_step(done)
            due = bool(checkpoint_every and done % checkpoint_every == 0)
            if interval and not due:
                due = monotonic() - last_checkpoint >= interval
            if on_checkpoint is not None and due:
                on_checkpoint(snapshot(done))
                last_checkpoint = monotonic()  # S seconds of training between two
            if should_stop is not None and done < num_iterations and should_stop():
                return snapshot(done, stopped=True)
        if cost is not None and (num_iterations - 1) % record_every != 0:
            value = float(cost)
            _check(value, num_iterations - 1, partial(source.parameters, good),
                   good_iteration, costs)  # fmt: skip
        return snapshot(max(num_iterations, state.iteration))


def _count_batches(source: StepSource, on_batch: Callable[[int], None]) -> None:
    """Have a source whose iterations take steps (``step(X, Y, ...)``, as the mini-batch
    sources do) report each step's number of examples: X's shape, no device read."""
    inner = getattr(source, "step", None)
    if not callable(inner):
        return  # a source without steps (the Gram path): on_step alone tells the progress

    def step(X: Array, Y: Array, *args: Any, **kwargs: Any) -> Array:
        out = inner(X, Y, *args, **kwargs)
        on_batch(int(X.shape[1]))
        return out

    source.step = step  # type: ignore[attr-defined]  (this run's source only)


def _check(
    value: float, iteration: int, good_params: Any, good_iteration: int, costs: list
) -> None:
    """Raise DivergenceError for a cost that breaks the divergence rule; ``good_params`` is a
    callable giving the kept parameters, so that they are only materialised when needed."""
    if math.isfinite(value):
        limit = divergence_limit(costs, value)
        if value <= limit:
            return
        why = f"grew to {value:.6g}, above {limit:.6g} (10x its start)"
    else:
        why = f"became {value}"
    raise DivergenceError(
        f"training diverged: the cost {why} at iteration {iteration}; try a smaller "
        f"learning rate. The parameters kept are those of iteration {good_iteration}, the "
        "last whose cost was good.",
        iteration=iteration,
        parameters=good_params() if callable(good_params) else good_params,
        costs=list(costs),
    )
