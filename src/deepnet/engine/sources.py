"""Step sources for :func:`deepnet.engine.fit.run_loop`: where each iteration's step comes from.

- :class:`MemorySteps`: device-resident X, Y; full batch or seeded mini-batches. Each step
  (:meth:`ParameterSteps.step`) is the fused generic step (:func:`deepnet.step.optimizer_step`),
  or the fused CUDA step where :func:`cuda_supports` says it computes the same thing.
- :class:`deepnet.fastpath.GramSteps`: full batch, W1 @ X tracked through X.T @ X.
- :class:`deepnet.streaming.StreamSteps` and :class:`deepnet.distributed.AllreduceSteps`:
  a file read as needed, and MPI shards.

:func:`memory_source` picks between the first two; a fast path runs only where its
``supports(network, optimizer)`` is true, so it is never silently wrong.
"""

from __future__ import annotations

import threading
from typing import Any

import array_api_compat
import numpy as np

from deepnet import fastpath, gram_batches
from deepnet.backend import array_namespace
from deepnet.cuda import dispatch as cuda_dispatch
from deepnet.errors import InputError
from deepnet.optim import Optimizer, State, is_plain_gd
from deepnet.regularization import NONE, Regularization
from deepnet.step import optimizer_step

Array = Any


_ORDER = threading.local()  # one generator per thread (the read-ahead thread draws too)


def batch_order(m: int, batch_size: int | None, seed: int, epoch: int) -> list[np.ndarray] | None:
    """Column indices of each mini-batch of one epoch (None for full batch).

    The shuffle depends only on (seed, epoch), so a resumed run sees the same batches.
    """
    if batch_size is None or batch_size >= m:
        return None
    # Re-seeding one generator per thread draws the same permutation as a new
    # RandomState([seed, epoch]) in a tenth of the time (~20 us against ~0.16 ms).
    rng = getattr(_ORDER, "rng", None)
    if rng is None:
        rng = _ORDER.rng = np.random.RandomState()
    rng.seed([seed, epoch])
    order = rng.permutation(m)
    return [order[i : i + batch_size] for i in range(0, m, batch_size)]


def column_major(X: Array) -> bool:
    """True when X's columns are contiguous and its rows are not (NumPy/CuPy flags, torch
    strides; JAX arrays have no layout to ask about)."""
    flags = getattr(X, "flags", None)
    if flags is not None:
        return bool(flags.f_contiguous and not flags.c_contiguous)
    if array_api_compat.is_torch_array(X) and X.ndim == 2:
        return X.stride(0) == 1 and X.shape[0] > 1 and X.stride(1) != 1
    return False


def take_columns(xp: Any, X: Array, cols: Array) -> Array:
    """``X[:, cols]``, gathered along whichever axis is contiguous in memory.

    Picture data arrive example-major (each column contiguous, as ``images.reshape(m, -1).T``
    gives). Gathering such columns directly walks memory with a 12288-row stride, 200x slower
    than gathering the rows of the transpose; for C-ordered X it is the other way round.
    """
    if column_major(X):
        return xp.take(X.T, cols, axis=0).T
    return xp.take(X, cols, axis=1)


def cuda_supports(hidden: str, optimizer: Optimizer, reg: Regularization = NONE) -> bool:
    """True when the fused CUDA step computes this step: ReLU hidden layers, sigmoid output,
    plain gradient descent without decay, L2 or dropout (what :mod:`deepnet.cuda`
    implements); everything else takes the generic step."""
    return hidden == "relu" and is_plain_gd(optimizer) and reg.plain


def split_resume(resume: dict[str, Any]) -> State:
    """The optimizer's part (``opt.*``) of a TrainState's resume record."""
    return {k[4:]: v for k, v in resume.items() if k.startswith("opt.")}


class ParameterSteps:
    """The common part of the step sources whose parameters are a dict that each step
    replaces (never changes): the optimizer, its state, marks and the resume record."""

    def __init__(
        self,
        parameters: dict[str, Array],
        optimizer: Optimizer,
        hidden: str = "relu",
        resume: dict | None = None,
        reg: Regularization = NONE,
    ) -> None:
        self.params, self.optimizer, self.hidden = parameters, optimizer, hidden
        self.reg = reg
        self.state = split_resume(resume or {}) or optimizer.init_state(parameters)

    def step(
        self, X: Array, Y: Array, iteration: int, fixed_input: bool = False, batch: int = 0
    ) -> Array:
        """One step on (X, Y), returning its cost: the fused CUDA step where
        :func:`cuda_supports` says it computes this step, else the generic one
        (``fixed_input``: X is the same at every step, as at full batch; ``batch``: the
        mini-batch's index in its epoch, for dropout's masks)."""
        if cuda_supports(self.hidden, self.optimizer, self.reg) and cuda_dispatch.accepts(
            self.params, X, Y
        ):
            lr = self.optimizer.learning_rate  # type: ignore[attr-defined]
            self.params, cost = cuda_dispatch.cuda_train_step(self.params, X, Y, lr)
            return cost
        self.params, cost, self.state = optimizer_step(
            self.params, X, Y, self.optimizer, self.state, iteration, self.hidden, fixed_input,
            reg=self.reg, batch=batch,
        )  # fmt: skip
        return cost

    def mark(self) -> dict[str, Array]:
        """The parameters dict itself: steps build new dicts, never change one."""
        return self.params

    def parameters(self, mark: dict[str, Array] | None = None) -> dict[str, Array]:
        """The parameters now, or at ``mark``."""
        return self.params if mark is None else mark

    def resume_state(self) -> dict[str, Any]:
        """The optimizer's state, as ``opt.*``."""
        return {f"opt.{k}": v for k, v in self.state.items()}

    def close(self) -> None:
        """Nothing to release."""


class MemorySteps(ParameterSteps):
    """Iterations of :func:`one_step` on device-resident data, full batch or mini-batches."""

    def __init__(
        self,
        parameters: dict[str, Array],
        X: Array,
        Y: Array,
        optimizer: Optimizer,
        *,
        hidden: str = "relu",
        batch_size: int | None = None,
        seed: int = 1,
        resume: dict[str, Any] | None = None,
        reg: Regularization = NONE,
    ) -> None:
        super().__init__(parameters, optimizer, hidden, resume, reg)
        self.X, self.Y, self.batch_size, self.seed = X, Y, batch_size, seed

    def run(self, iteration: int) -> Array:
        """One pass over the data; the cost is the batches' costs weighted by their size."""
        X, Y, m = self.X, self.Y, self.X.shape[1]
        batches = batch_order(m, self.batch_size, self.seed, iteration)
        if batches is None:
            return self.step(X, Y, iteration, fixed_input=True)
        xp, where = array_namespace(X, Y), array_api_compat.device(X)
        cost = 0.0
        for k, idx in enumerate(batches):
            cols = xp.asarray(idx, device=where)  # a small host->device copy of the indices
            Xb, Yb = take_columns(xp, X, cols), xp.take(Y, cols, axis=1)
            cost = cost + self.step(Xb, Yb, iteration, batch=k) * (len(idx) / m)
        return cost


def memory_source(
    parameters: dict[str, Array],
    X: Array,
    Y: Array,
    optimizer: Optimizer,
    *,
    gram: bool | None = None,
    iterations_left: int = 0,
    resume: dict[str, Any] | None = None,
    **step_options: Any,
) -> MemorySteps | fastpath.GramSteps:
    """The source for in-memory data: the Gram path where it is supported and pays
    (``gram``: None automatic, True wherever supported, False never), else
    :class:`MemorySteps`. Full batch: :class:`deepnet.fastpath.GramSteps`; mini-batches:
    :class:`deepnet.gram_batches.GramBatchSteps` (:func:`deepnet.gram_batches.use`).

    A resumed Gram run (``gram.*`` arrays in ``resume``) continues on the Gram path,
    exactly, unless ``gram=False``. ``step_options`` (hidden, batch_size, seed, reg) are
    :class:`MemorySteps`'.
    """
    resume = resume or {}
    hidden, batch_size = step_options.get("hidden", "relu"), step_options.get("batch_size")
    reg = step_options.get("reg", NONE)
    n1 = parameters["W1"].shape[0]
    if not fastpath.gram_applies(X, batch_size) and reg.plain:  # mini-batches: gram_batches
        if gram_batches.use(gram, X, batch_size, n1, iterations_left, optimizer, resume):
            return gram_batches.GramBatchSteps(parameters, X, Y, optimizer, resume=resume,
                                               **step_options)  # fmt: skip
        resume = {k: v for k, v in resume.items() if not k.startswith("gram.")}
        return MemorySteps(parameters, X, Y, optimizer, resume=resume, **step_options)
    supported = fastpath.supports(None, optimizer, reg)
    if gram and not supported:
        raise InputError(
            f"gram=True: the Gram path cannot run {optimizer!r} (its W1 update is not of the "
            "form H @ X.T); use gram=None or gram=False"
        )
    if any(k.startswith("gram.") for k in resume) and gram is not False and supported:
        wanted = fastpath.gram_applies(X, batch_size)
    else:
        wanted = iterations_left > 0 and fastpath.use_gram(gram, X, batch_size, n1, iterations_left)
    if wanted and supported:
        return fastpath.GramSteps(parameters, X, Y, optimizer, hidden=hidden, resume=resume,
                                  reg=reg)  # fmt: skip
    resume = {k: v for k, v in resume.items() if not k.startswith("gram.")}
    return MemorySteps(parameters, X, Y, optimizer, resume=resume, **step_options)
