"""Mini-batch training with the first layer tracked through the Gram matrix ``K = X.T @ X``.

The mini-batch form of :mod:`deepnet.fastpath` (docs/benchmarks.md, "Mini-batch Gram").
With X fixed, every first-layer update an optimizer linear in its gradients makes is a
combination of past ``G_B @ X_B.T`` (``G_B = dZ1_B / |B|``) and of W1 itself, so W1 stays in

    W1 = alpha * W1_start + C @ X.T          (alpha a number, C an n1 x m matrix)

and its product with all m examples, ``P = W1 @ X = alpha * P_start + C @ K``, can be
carried along. A step on batch B reads ``P[:, B]``; the gradient's own product is
``G_B @ K[B, :]`` (``2 * n1 * |B| * m`` flops instead of the two ``2 * n1 * |B| * n_x``
products with X). W1 is formed (one wide product) only when someone asks for it.

:class:`Span` is such a W1-like quantity (``alpha``, ``C`` and ``P`` together). Spans add,
subtract and scale by numbers, and nothing else, so an optimizer written with those
operations only (SGD, momentum, L2, a decaying rate) drives this source unchanged: it
receives W1 and dW1 as spans. Adam (elementwise squares and roots) and input dropout
(X changes) are declined by :func:`supports`.

Array API only, no in-place updates, except NumPy fast paths for scattering a batch's
columns. The same batch order as the ordinary step (:func:`deepnet.training.batch_order`),
so the costs and accuracies agree with it to rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from deepnet.backend import array_namespace
from deepnet.errors import InputError
from deepnet.fastpath import gram_matrix, start_product
from deepnet.step import backward_above_input, in_course_order

Array = Any


class _Space:
    """What every span of one run shares: X, K = X.T @ X, W1_start and its product."""

    def __init__(self, X: Array, W1_start: Array, K: Array | None = None) -> None:
        self.xp = array_namespace(X, W1_start)
        self.X, self.W1_start, self.m = X, W1_start, X.shape[1]
        self.K = gram_matrix(X) if K is None else K
        self.on_numpy = array_api_compat.is_numpy_array(X)

    def scatter(self, C: Array | None, cols: Array, block: Array, sign: float = 1.0) -> Array:
        """``C`` (None: zeros) plus ``sign * block`` in columns ``cols``, as a new array."""
        if self.on_numpy:
            out = np.zeros((block.shape[0], self.m), block.dtype) if C is None else C.copy()
            if sign > 0:
                out[:, cols] += block  # the columns of a batch are distinct
            else:
                out[:, cols] -= block
            return out
        xp = self.xp
        every = xp.arange(self.m, device=array_api_compat.device(cols))
        onehot = xp.astype(xp.reshape(cols, (-1, 1)) == xp.reshape(every, (1, -1)), block.dtype)
        embedded = block @ onehot  # exact: one 1.0 per column, zeros elsewhere
        if C is None:
            return embedded if sign > 0 else -embedded
        return C + embedded if sign > 0 else C - embedded


class Span:
    """``alpha * W1_start + C @ X.T`` with ``P`` = that matrix times X; immutable.

    ``C`` is dense, None (zero), or a batch's block of columns (``cols``, ``block``):
    a gradient stays in that form until it is added to something else.
    """

    __slots__ = ("space", "alpha", "C", "cols", "block", "P")

    def __init__(
        self,
        space: _Space,
        alpha: float,
        P: Array,
        C: Array | None = None,
        cols: Array | None = None,
        block: Array | None = None,
    ) -> None:
        self.space, self.alpha, self.P = space, float(alpha), P
        self.C, self.cols, self.block = C, cols, block

    @classmethod
    def gradient(cls, space: _Space, cols: Array | None, G: Array) -> Span:
        """The span of ``G @ X[:, cols].T`` (a batch's dW1): its product is ``G @ K[cols]``.

        ``cols=None`` is the full batch: every column, in order.
        """
        if cols is None:
            return cls(space, 0.0, G @ space.K, C=G)
        K_B = space.xp.take(space.K, cols, axis=0)
        return cls(space, 0.0, G @ K_B, cols=cols, block=G)

    def dense(self) -> Array | None:
        """C as an n1 x m matrix (None when zero)."""
        if self.block is not None:
            return self.space.scatter(None, self.cols, self.block)
        return self.C

    def _scaled(self, f: Callable[[Array], Array], a: float) -> Span:
        C = None if self.C is None else f(self.C)
        block = None if self.block is None else f(self.block)
        return Span(self.space, a, f(self.P), C, self.cols, block)

    def __mul__(self, s: Any) -> Span:
        if not isinstance(s, (int, float)):
            return NotImplemented  # only numbers: anything else is not linear in the G's
        return self._scaled(lambda a: a * s, self.alpha * s)

    __rmul__ = __mul__

    def __truediv__(self, s: Any) -> Span:
        if not isinstance(s, (int, float)):
            return NotImplemented
        return self._scaled(lambda a: a / s, self.alpha / s)

    def __neg__(self) -> Span:
        return self * -1.0

    def __add__(self, other: Any) -> Span:
        if not isinstance(other, Span):
            return NotImplemented
        return Span(self.space, self.alpha + other.alpha, self.P + other.P, *_add(self, other))

    def __sub__(self, other: Any) -> Span:
        if not isinstance(other, Span):
            return NotImplemented
        # a - b rounds as a + (-b); subtracting directly saves negating b's arrays.
        return Span(self.space, self.alpha - other.alpha, self.P - other.P,
                    *_add(self, other, sign=-1.0))  # fmt: skip

    def zeros_like(self) -> Span:
        """The zero span (an optimizer's initial velocity)."""
        return Span(self.space, 0.0, self.space.xp.zeros_like(self.P))

    def value(self) -> Array:
        """The matrix itself: ``alpha * W1_start + C @ X.T`` (one wide product)."""
        space, C = self.space, self.dense()
        base = space.W1_start if self.alpha == 1.0 else self.alpha * space.W1_start
        return base if C is None else base + C @ space.X.T

    def arrays(self) -> dict[str, Any]:
        """What a checkpoint stores: ``alpha``, dense ``C`` and ``P`` (resumes bit-identically)."""
        C = self.dense()
        return {"alpha": self.alpha, "C": self.space.xp.zeros_like(self.P) if C is None else C,
                "P": self.P}  # fmt: skip


def _add(a: Span, b: Span, sign: float = 1.0) -> tuple[Array | None, Array | None, Array | None]:
    """(C, cols, block) of ``a + sign * b``: blocks on the same columns stay blocks."""
    if a.block is not None and b.block is not None and a.cols is b.cols:
        return None, a.cols, (a.block + b.block if sign > 0 else a.block - b.block)
    if b.block is not None:
        return a.space.scatter(a.dense(), b.cols, b.block, sign), None, None
    if a.block is not None:
        if sign > 0:
            return _add(b, a)
        return a.space.scatter(None if b.C is None else -b.C, a.cols, a.block), None, None
    if b.C is None:
        return a.C, None, None
    if a.C is None:
        return (b.C if sign > 0 else -b.C), None, None
    return (a.C + b.C if sign > 0 else a.C - b.C), None, None


class SGD:
    """Plain gradient descent, ``p - lr * g``: the default optimizer of the source."""

    linear_in_gradients = True

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = learning_rate

    def init(self, parameters: dict[str, Any]) -> Any:
        return None

    def update(
        self, parameters: dict[str, Any], grads: dict[str, Any], state: Any, step: int
    ) -> tuple[dict[str, Any], Any]:
        """New parameters from gradients keyed like the parameters (W1's are spans)."""
        lr = self.learning_rate
        return {k: p - lr * grads[k] for k, p in parameters.items()}, state


def supports(optimizer: Any = None, *, input_dropout: bool = False) -> bool:
    """True when this source can run the optimizer: its update is linear in the gradients.

    An optimizer says so with ``linear_in_gradients = True`` (plain SGD, momentum, L2,
    learning-rate decay); Adam and input dropout are declined.
    """
    return not input_dropout and (
        optimizer is None or bool(getattr(optimizer, "linear_in_gradients", False))
    )


def pays(m: int, n_x: int, n1: int, batch: int | None, iterations: int) -> bool:
    """True when the Gram source does less work than the ordinary step over the run.

    Needs ``m <= n_x`` (K no larger than X). Per iteration the ordinary step does
    ``4 * n1 * n_x * m`` flops on the two wide products; this source ``2 * n1 * m * m``
    plus ``~8 * n1 * m`` per batch of elementwise work on the spans; K, P and the final W1
    cost ``2 * m * n_x * (m + 2 * n1)`` once. Twice the one-off cost must be repaid.
    """
    if m > n_x or m < 1 or iterations < 1:
        return False
    batches = 1 if batch is None or batch >= m else -(-m // batch)
    ordinary = 4 * n1 * n_x * m
    mine = 2 * n1 * m * m + 8 * n1 * m * batches
    once = 2 * m * n_x * (m + 2 * n1)
    return iterations * (ordinary - mine) >= 2 * once


def use(
    gram: bool | None,
    X: Array,
    batch_size: int | None,
    n1: int,
    iterations: int,
    optimizer: Any = None,
    *,
    input_dropout: bool = False,
) -> bool:
    """fit's decision: None is automatic (where valid and paying, not on a GPU, where it is
    unmeasured), True insists (an InputError where it cannot apply), False refuses."""
    if gram is None:
        n_x, m = X.shape
        on_gpu = array_api_compat.is_cupy_array(X)
        return (
            not on_gpu
            and supports(optimizer, input_dropout=input_dropout)
            and pays(m, n_x, n1, batch_size, iterations)
        )
    if gram and not supports(optimizer, input_dropout=input_dropout):
        raise InputError(
            "gram=True needs an update linear in the gradients (gradient descent, momentum, "
            "L2, learning-rate decay) and no dropout on the input; use gram=None or gram=False"
        )
    return bool(gram)


@dataclass
class GramBatchState:
    """The state a checkpoint needs to continue bit-identically (K is recomputed from X)."""

    W1_start: Array
    W1: dict[str, Any]  # Span.arrays(): alpha, C, P
    rest: dict[str, Array]  # b1, W2, b2, ...
    optimizer: Any  # the optimizer's state, its spans as Span.arrays() dicts
    steps: int = 0  # batch steps taken so far (an optimizer's schedule may use it)


class GramBatchSteps:
    """A step source for ``fit``: mini-batch (or full-batch) iterations through K.

    ``run(iteration) -> cost``, ``mark()`` and ``parameters(mark)`` as ``fit`` expects;
    ``state()`` / ``resume=`` for checkpoints. Batches come from ``batch_order`` with
    ``(seed, iteration)``, exactly as the ordinary mini-batch step draws them.
    """

    def __init__(
        self,
        parameters: dict[str, Array],
        X: Array,
        Y: Array,
        learning_rate: float,
        batch_size: int | None = None,
        seed: int = 1,
        optimizer: Any = None,
        *,
        resume: GramBatchState | None = None,
        K: Array | None = None,
    ) -> None:
        from deepnet.training import batch_order  # training imports sources

        self.batch_order = batch_order
        self.xp = array_namespace(X, Y)
        self.Y, self.batch_size, self.seed = Y, batch_size, seed
        self.optimizer = SGD(learning_rate) if optimizer is None else optimizer
        if resume is None:
            W1 = parameters["W1"]
            self.space = _Space(X, W1, K)
            self.W1 = Span(self.space, 1.0, start_product(W1, X))
            self.rest = {k: v for k, v in parameters.items() if k != "W1"}
            self.opt_state = self.optimizer.init(self._all())
        else:
            self.space = _Space(X, resume.W1_start, K)
            self.W1 = self._span(resume.W1)
            self.rest = dict(resume.rest)
            self.opt_state = _map_spans(resume.optimizer, self._span, from_arrays=True)
        self.steps = 0 if resume is None else resume.steps

    def _all(self) -> dict[str, Any]:
        return {"W1": self.W1, **self.rest}

    def _span(self, arrays: dict[str, Any]) -> Span:
        return Span(self.space, arrays["alpha"], arrays["P"], C=arrays["C"])

    def _step(self, cols: Array | None) -> Array:
        xp = self.xp
        if cols is None:  # full batch
            P_B, Y_B = self.W1.P, self.Y
        else:
            P_B, Y_B = xp.take(self.W1.P, cols, axis=1), xp.take(self.Y, cols, axis=1)
        grads, G, cost = backward_above_input({**self.rest, "W1": None}, P_B, Y_B)
        grads = {key[1:]: g for key, g in grads.items()}
        grads["W1"] = Span.gradient(self.space, cols, G)
        new, self.opt_state = self.optimizer.update(self._all(), grads, self.opt_state, self.steps)
        self.steps += 1
        self.W1 = new.pop("W1")
        self.rest = new
        return cost

    def run(self, iteration: int) -> Array:
        """One pass over the data; returns its cost (the batches' costs weighted by size)."""
        xp, m = self.xp, self.space.m
        batches = self.batch_order(m, self.batch_size, self.seed, iteration)
        if batches is None:
            return self._step(None)
        cost = 0.0
        for idx in batches:
            cols = xp.asarray(idx, device=array_api_compat.device(self.Y))
            cost = cost + self._step(cols) * (len(idx) / m)
        return cost

    def mark(self) -> tuple[Span, dict[str, Array]]:
        """The W1 span and the other layers: cheap, both immutable."""
        return self.W1, self.rest

    def parameters(self, mark: tuple[Span, dict[str, Array]] | None = None) -> dict[str, Array]:
        """All parameters, W1 formed (one wide product), now or at ``mark``."""
        W1, rest = (self.W1, self.rest) if mark is None else mark
        return in_course_order({**rest, "W1": W1.value()})

    def state(self) -> GramBatchState:
        """What a checkpoint stores to resume bit-identically (same X, BLAS and threads)."""
        return GramBatchState(
            self.space.W1_start, self.W1.arrays(), dict(self.rest),
            _map_spans(self.opt_state, Span.arrays), self.steps,
        )  # fmt: skip


def _map_spans(tree: Any, f: Callable, from_arrays: bool = False) -> Any:
    """Apply ``f`` to every span (or span's arrays dict) in nested dicts/lists/tuples."""
    if (from_arrays and isinstance(tree, dict) and set(tree) == {"alpha", "C", "P"}) or (
        not from_arrays and isinstance(tree, Span)
    ):
        return f(tree)
    if isinstance(tree, dict):
        return {k: _map_spans(v, f, from_arrays) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map_spans(v, f, from_arrays) for v in tree)
    return tree
