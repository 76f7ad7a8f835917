"""Mini-batch training with the first layer tracked through the Gram matrix ``K = X.T @ X``.

The mini-batch form of :mod:`deepnet.fastpath` (docs/benchmarks.md, "Mini-batch Gram").
X is fixed for the whole run, so every first-layer update an optimizer makes through its
``input_step`` (``W1 <- decay * W1 - H1 @ X_B.T``, :mod:`deepnet.optim`) keeps W1 in the form

    W1 = alpha * W1_start - H_sum @ X.T        (alpha a number, H_sum an n1 x m matrix)

and its product with all m examples, ``P = W1 @ X``, can be carried along: a step on batch B
reads ``P[:, B]`` and moves P by ``H1 @ K[B, :]`` (``2 * n1 * |B| * m`` flops instead of the
two ``2 * n1 * |B| * n_x`` products with X). W1 is formed (one wide product) only when
someone asks for it. The state is :class:`deepnet.fastpath.GramFirstLayer`'s, so a
checkpoint (``gram.*`` in ``TrainState.resume``) continues exactly.

Which optimizers (the same protocol as the full-batch Gram path):

- ``factored_per_batch`` (gradient descent, L2, schedules): ``input_step`` gets the batch's
  ``G1`` (n1 x |B|) and its ``H1`` lands in B's columns of ``H_sum``.
- ``keeps_input_update_linear`` only (momentum): its state mixes batches, so ``input_step``
  gets ``G1`` placed in B's columns of an n1 x m zero matrix (its gradient ``G1 @ X_B.T`` is
  that matrix times X.T, exactly), and P moves by ``H1 @ K``.
- neither (Adam): declined (:func:`supports`); fit takes the ordinary step.

The batches are :func:`deepnet.engine.sources.batch_order`'s, so the run takes the ordinary
mini-batch steps to rounding.
"""

from __future__ import annotations

from typing import Any

import array_api_compat

from deepnet.backend import array_namespace
from deepnet.errors import InputError
from deepnet.fastpath import GramFirstLayer, GramSteps
from deepnet.optim import GradientDescent, Optimizer
from deepnet.step import step_above_input

Array = Any


def supports(optimizer: Any) -> bool:
    """True when this source runs ``optimizer`` exactly: its W1 update is ``input_step``'s
    (``factored_per_batch`` or ``keeps_input_update_linear``); Adam is declined."""
    return bool(
        getattr(optimizer, "factored_per_batch", False)
        or getattr(optimizer, "keeps_input_update_linear", False)
    )


def pays(
    m: int, n_x: int, n1: int, batch: int | None, iterations: int, per_batch: bool = True
) -> bool:
    """True when the Gram source does less work than the ordinary step over the run.

    Needs ``m <= n_x`` (K no larger than X). Per iteration the ordinary step does
    ``4 * n1 * n_x * m`` flops on the two wide products; this source ``2 * n1 * m * m``
    (``per_batch``: each batch moves only its rows of K; else every batch moves all of P,
    ``2 * n1 * m * m`` per batch) plus ``~8 * n1 * m`` elementwise per batch. K, P and the
    final W1 cost ``2 * m * n_x * (m + 2 * n1)`` once; twice that must be repaid.
    """
    if m > n_x or m < 1 or iterations < 1:
        return False
    batches = 1 if batch is None or batch >= m else -(-m // batch)
    ordinary = 4 * n1 * n_x * m
    mine = 2 * n1 * m * m * (1 if per_batch else batches) + 8 * n1 * m * batches
    once = 2 * m * n_x * (m + 2 * n1)
    return iterations * (ordinary - mine) >= 2 * once


def use(
    gram: bool | None,
    X: Array,
    batch_size: int | None,
    n1: int,
    iterations: int,
    optimizer: Optimizer,
    resume: dict[str, Any] | None = None,
) -> bool:
    """fit's decision for mini-batches: None is automatic, True insists, False refuses.

    Automatic: on the CPU (unmeasured on a GPU), for a supported optimizer, where it pays;
    a checkpoint of this source (``gram.*``) continues on it, and one of the ordinary step
    holding optimizer state (``opt.*`` without ``gram.*``: its W1 state is n_x wide) does not
    switch to it. ``gram=True`` with an unsupported optimizer is an InputError.
    """
    resume = resume or {}
    if gram is False:
        return False
    if not supports(optimizer):
        if gram:
            raise InputError(
                f"gram=True: the Gram path cannot run {optimizer!r} (its W1 update is not of "
                "the form H @ X.T); use gram=None or gram=False"
            )
        return False
    if gram or any(k.startswith("gram.") for k in resume):
        return True
    if any(k.startswith("opt.") for k in resume):
        return False
    n_x, m = X.shape
    per_batch = bool(getattr(optimizer, "factored_per_batch", False))
    return not array_api_compat.is_cupy_array(X) and pays(
        m, n_x, n1, batch_size, iterations, per_batch
    )


class BatchFirstLayer(GramFirstLayer):
    """:class:`GramFirstLayer` with a step on some columns: ``W1 <- d W1 - H1 @ X_B.T``."""

    def step_columns(self, cols: Array, H: Array, decay: float = 1.0, xp: Any = None) -> None:
        """Apply ``W1 <- decay * W1 - H @ X[:, cols].T`` (H: n1 x |cols|) in P's terms."""
        xp = array_namespace(H) if xp is None else xp
        if decay != 1:
            self.P, self.H_sum, self.alpha = decay * self.P, decay * self.H_sum, decay * self.alpha
        self.P = self.P - H @ xp.take(self.K, cols, axis=0)
        self.H_sum = scatter_add(self.H_sum, cols, H)


def scatter_add(A: Array, cols: Array, block: Array) -> Array:
    """A new array: ``A`` plus ``block`` in columns ``cols`` (distinct indices).

    ``A`` itself is not changed: marks taken earlier hold it."""
    if array_api_compat.is_numpy_array(block):
        out = A.copy()
        out[:, cols] += block
        return out
    xp = array_namespace(A, block)
    every = xp.arange(A.shape[1], device=array_api_compat.device(cols))
    onehot = xp.astype(xp.reshape(cols, (-1, 1)) == xp.reshape(every, (1, -1)), A.dtype)
    return A + block @ onehot  # exact: one 1.0 per column, zeros elsewhere


class GramBatchSteps(GramSteps):
    """Mini-batch iterations for :func:`deepnet.engine.fit.run_loop`, W1 @ X tracked
    through K (full batch, ``batch_size`` None or >= m, is :class:`GramSteps`' step).
    ``optimizer`` may be a learning rate (plain gradient descent).

    Marks, parameters, the resume record (``opt.*`` and ``gram.*``) and close are
    :class:`GramSteps`'; the batches are ``batch_order(m, batch_size, seed, iteration)``.
    """

    def __init__(
        self,
        parameters: dict[str, Array],
        X: Array,
        Y: Array,
        optimizer: Optimizer | float,
        *,
        hidden: str = "relu",
        batch_size: int | None = None,
        seed: int = 1,
        resume: dict[str, Any] | None = None,
        reg: Any = None,
    ) -> None:
        if reg is not None and not getattr(reg, "plain", True):
            raise InputError("the mini-batch Gram source runs no L2 or dropout; use gram=False")
        if not isinstance(optimizer, Optimizer):  # a learning rate: plain gradient descent
            optimizer = GradientDescent(optimizer)
        if not supports(optimizer):
            raise InputError(f"the Gram path cannot run {optimizer!r}; use gram=False")
        resume = resume or {}
        self.rest = dict(parameters)
        gram = {k[5:]: v for k, v in resume.items() if k.startswith("gram.")}
        self.first = BatchFirstLayer(self.rest.pop("W1"), X, resume=gram or None)
        self.Y, self.optimizer, self.hidden = Y, optimizer, hidden
        self.batch_size, self.seed, self.m = batch_size, seed, X.shape[1]
        self.per_batch = bool(getattr(optimizer, "factored_per_batch", False))
        self.opt_state = {k[4:]: v for k, v in resume.items() if k.startswith("opt.")}
        if not self.opt_state:
            self.opt_state = optimizer.init_state(parameters)

    def run(self, iteration: int) -> Array:
        """One pass over the data; the cost is the batches' costs weighted by their size."""
        from deepnet.engine.sources import batch_order  # sources imports us

        batches = batch_order(self.m, self.batch_size, self.seed, iteration)
        if batches is None:
            return super().run(iteration)
        xp, m = array_namespace(self.first.P), self.m
        where = array_api_compat.device(self.Y)
        cost = 0.0
        for idx in batches:
            cols = xp.asarray(idx, device=where)  # a small host->device copy of the indices
            P_B, Y_B = xp.take(self.first.P, cols, axis=1), xp.take(self.Y, cols, axis=1)
            rest, G, c, state = step_above_input(
                {**self.rest, "W1": None}, P_B, Y_B, self.optimizer, self.opt_state,
                iteration, self.hidden,
            )  # fmt: skip
            if self.per_batch:
                H, decay, state = self.optimizer.input_step(G, state, iteration)  # type: ignore[attr-defined]
                self.first.step_columns(cols, H, decay, xp)
            else:  # G placed in the batch's columns: input_step sees a gradient on all of X
                G_all = scatter_add(xp.zeros_like(self.first.P), cols, G)
                H, decay, state = self.optimizer.input_step(G_all, state, iteration)  # type: ignore[attr-defined]
                self.first.step(H, decay)
            self.rest, self.opt_state = rest, state
            cost = cost + c * (len(idx) / m)
        return cost
