"""Full-batch training with the first layer tracked through the Gram matrix ``K = X.T @ X``.

A reformulation, not the course's arithmetic. In full-batch gradient descent X never
changes and W1 only ever moves by ``-lr * G @ X.T`` (G = dZ1 / m, shape n1 x m), so

    P = W1 @ X   becomes   P - lr * G @ (X.T @ X) = P - lr * G @ K

and ``W1 = W1_start - lr * (sum of the G's) @ X.T`` is needed only when someone looks at
it. After one m x m x n_x product for K, a step costs about 2 * n1 * m**2 flops instead of
4 * n1 * n_x * m: on the course's data (n_x = 12288, m = 209) that is ~120x fewer, and the
two 12288-wide products disappear from the loop. The numbers are the same sums rounded
in another order: on the course's real-data runs (float64, 2500 iterations) the recorded
costs agree with the step-by-step path to 7e-14 relative, and the accuracies are equal.

It applies only to full batch with a fixed X, and pays only when ``m <= n_x`` (K is then no
larger than X, and cheaper per step) and enough iterations follow to repay K.
:func:`deepnet.training.fit` uses it automatically there (``gram=None``), always with
``gram=True`` where it is valid, never with ``gram=False``.
"""

from __future__ import annotations

from typing import Any

import array_api_compat

from deepnet.backend import array_namespace
from deepnet.errors import InputError
from deepnet.step import in_course_order, input_product, step_above_input

Array = Any


def gram_applies(X: Array, batch_size: int | None) -> bool:
    """True when the Gram path is valid: full batch (every step sees the same X)."""
    return batch_size is None or batch_size >= X.shape[1]


def gram_pays(X: Array, n1: int, iterations: int) -> bool:
    """True when K = X.T @ X is no larger than X and the steps left repay computing it.

    K costs ~n_x * m**2 flops and each step saves ~4 * n1 * n_x * m, so it is repaid after
    about m / (4 * n1) steps; twice that is asked for, to stay clear of the break-even.
    """
    n_x, m = X.shape
    return m <= n_x and iterations * 2 * n1 >= m


def use_gram(gram: bool | None, X: Array, batch_size: int | None, n1: int, iterations: int) -> bool:
    """Decide for :func:`deepnet.training.fit`: None is automatic, True insists, False refuses."""
    if gram is None:
        # On CuPy arrays the step is a captured CUDA graph (deepnet.cuda_step), launch-bound
        # at the course's sizes: the Gram path is left to gram=True there until measured.
        on_gpu = array_api_compat.is_cupy_array(X)
        return not on_gpu and gram_applies(X, batch_size) and gram_pays(X, n1, iterations)
    if gram and not gram_applies(X, batch_size):
        raise InputError(
            f"gram=True needs full-batch training (batch_size=None or >= m = {X.shape[1]}), "
            f"got batch_size={batch_size}; mini-batches see a different X at every step. "
            "Use gram=None (automatic) or gram=False"
        )
    return bool(gram)


class GramFirstLayer:
    """W1 of a full-batch run, kept as ``P = W1 @ X`` and materialised only on demand."""

    def __init__(self, W1: Array, X: Array, learning_rate: float) -> None:
        xp = array_namespace(W1, X)
        self.X, self.learning_rate = X, learning_rate
        self.K = X.T @ X  # (m, m), once per run
        self.W1_start = W1
        self.P = input_product(W1, X)
        self.G_sum = xp.zeros_like(self.P)

    def step(self, G: Array) -> None:
        """Apply W1 <- W1 - lr * G @ X.T, in P's terms."""
        self.P = self.P - (self.learning_rate * G) @ self.K
        self.G_sum = self.G_sum + G

    def W1(self, G_sum: Array | None = None) -> Array:
        """W1 now (or as it was when ``G_sum`` was the running sum): one wide product."""
        G_sum = self.G_sum if G_sum is None else G_sum
        return self.W1_start - (self.learning_rate * G_sum) @ self.X.T


class GramSteps:
    """Full-batch iterations for :func:`deepnet.training.fit`, with W1 @ X tracked through K.

    Recording, callbacks, checkpoints and divergence stay in ``fit``; the parameters they
    see are materialised exactly (one wide product), and only when asked for.
    """

    def __init__(self, parameters: dict[str, Array], X: Array, Y: Array, lr: float) -> None:
        self.rest = dict(parameters)
        self.first = GramFirstLayer(self.rest.pop("W1"), X, lr)
        self.Y, self.lr = Y, lr

    def run(self, iteration: int) -> Array:
        """One full-batch step; returns its cost (before the update)."""
        rest, G, cost = step_above_input({**self.rest, "W1": None}, self.first.P, self.Y, self.lr)
        self.first.step(G)
        self.rest = rest
        return cost

    def mark(self) -> tuple[dict[str, Array], Array]:
        """The layers above the input and the running sum of G: W1 is rebuilt from these."""
        return self.rest, self.first.G_sum

    def parameters(self, mark: tuple[dict[str, Array], Array] | None = None) -> dict[str, Array]:
        """All parameters, W1 included, now or at ``mark``."""
        rest, G_sum = (self.rest, None) if mark is None else mark
        return in_course_order({**rest, "W1": self.first.W1(G_sum)})
