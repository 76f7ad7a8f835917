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
``gram=True`` where it is valid, never with ``gram=False``; and only for optimizers that
keep W1's change in the form ``H @ X.T`` (:func:`supports`).
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from deepnet.backend import array_namespace, float64_on, to_numpy
from deepnet.errors import InputError
from deepnet.optim import GradientDescent, Optimizer, input_step
from deepnet.regularization import NONE, Regularization
from deepnet.step import in_course_order, input_product, step_above_input

Array = Any


def start_product(W1: Array, X: Array) -> Array:
    """``P = W1 @ X`` to start the Gram tracking (in float32: summed in float64, rounded once)."""
    return input_product(W1, X) if X.dtype != float32_of(X) else rounded_once(W1, X)


def gram_matrix(X: Array) -> Array:
    """``K = X.T @ X`` for the Gram tracking (in float32: summed in float64, rounded once)."""
    return X.T @ X if X.dtype != float32_of(X) else rounded_once(X.T, X)


def float32_of(X: Array) -> Any:
    """The float32 dtype of X's namespace."""
    return array_namespace(X).float32


def rounded_once(A: Array, B: Array) -> Array:
    """``A @ B`` for float32 A, B: summed in float64 and rounded once to float32.

    The Gram path keeps P = W1 @ X and K = X.T @ X for the whole run, so their rounding
    errors persist (the step-by-step path recomputes W1 @ X at every step and its errors do
    not add up). Summed in float32, over n_x = 12288 inputs, the course's float32 L-layer
    run left the ordinary step's costs by 3% within 300 iterations and ended at train
    accuracy 0.9809, not 0.9856; with both rounded once it follows the ordinary float32 step
    to 1e-7 until iteration ~700 and ends at the course's accuracies on NumPy, torch and JAX
    (docs/benchmarks.md, "Backends"). float64 data never come here: bit-identical to before.
    Where the device has no float64 (JAX in 32-bit mode, torch on MPS) the sum is done on
    the host, once per run.
    """
    xp = array_namespace(A, B)
    if float64_on(A):
        return xp.astype(xp.astype(A, xp.float64) @ xp.astype(B, xp.float64), xp.float32)
    product = to_numpy(A).astype(np.float64) @ to_numpy(B).astype(np.float64)
    return xp.asarray(product.astype(np.float32), device=array_api_compat.device(B))


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
        # On CuPy arrays the step is a captured CUDA graph (deepnet.cuda), launch-bound
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


def supports(network: Any, optimizer: Optimizer, reg: Regularization = NONE) -> bool:
    """True when the Gram path is exact for this network, optimizer and regularisation.

    Any hidden activation works (only the first layer's linear part is tracked), and so
    does dropout on the hidden layers (it acts on A1 and above; ``P = W1 @ X`` is the same)
    and L2 (W1's share of it is ``decay * W1``, and ``||W1||^2`` follows from P). The
    optimizer must keep W1's change of the form ``decay * W1 - H @ X.T``
    (``keeps_input_update_linear``: gradient descent, momentum, decays; not Adam). Dropout
    on the input would change X at every step: deepnet never applies it there.
    """
    return bool(getattr(optimizer, "keeps_input_update_linear", False))


class GramFirstLayer:
    """W1 of a full-batch run, kept as ``P = W1 @ X`` and materialised only on demand.

    Each step is ``W1 <- decay * W1 - H @ X.T`` (the optimizer's ``input_step``), so
    ``W1 = alpha * W1_start - H_sum @ X.T`` with ``alpha`` the product of the decays and
    ``H_sum`` the decayed sum of the H's. ``resume`` (what :meth:`state` gave) continues a
    run exactly: P is restored, not recomputed from W1, so the sums keep their order.
    """

    def __init__(
        self,
        W1: Array,
        X: Array,
        learning_rate: float | None = None,
        resume: dict | None = None,
        *,
        norms: bool = False,
    ) -> None:
        xp = self.xp = array_namespace(W1, X)
        self.X, self.learning_rate = X, learning_rate
        self.K = gram_matrix(X)  # (m, m), once per run
        if resume is not None:
            self.W1_start, self.P, self.H_sum = resume["W1_start"], resume["P"], resume["H_sum"]
            self.alpha = float(resume.get("alpha", 1.0))
        else:
            self.W1_start, self.alpha = W1, 1.0
            self.P = start_product(W1, X)
            self.H_sum = xp.zeros_like(self.P)
        if norms:  # for L2: ||W1||^2 from P, without W1 (the same product as P's start)
            self.P_start = start_product(self.W1_start, X)
            self.start_squared = xp.sum(self.W1_start * self.W1_start)

    def squared_norm(self) -> Array:
        """``sum(W1 * W1)`` without forming W1 (``norms=True``), a 0-d array.

        W1 = a W0 - S X.T with P = W1 X = a P0 - S K gives
        ``||W1||^2 = a^2 ||W0||^2 - a sum(S * P0) - sum(S * P)``: n1 x m work, not n1 x n_x.
        """
        xp, a, S = self.xp, self.alpha, self.H_sum
        return a * a * self.start_squared - a * xp.sum(S * self.P_start) - xp.sum(S * self.P)

    def step(self, H: Array, decay: float = 1.0) -> None:
        """Apply W1 <- decay * W1 - H @ X.T, in P's terms."""
        if decay != 1:
            self.P, self.H_sum, self.alpha = decay * self.P, decay * self.H_sum, decay * self.alpha
        self.P = self.P - H @ self.K
        self.H_sum = self.H_sum + H

    def W1(self, mark: tuple[Array, float] | None = None) -> Array:
        """W1 now (or at a ``mark`` = (H_sum, alpha) taken earlier): one wide product."""
        H_sum, alpha = (self.H_sum, self.alpha) if mark is None else mark
        start = self.W1_start if alpha == 1 else alpha * self.W1_start
        return start - H_sum @ self.X.T

    def state(self) -> dict[str, Any]:
        """What continuing exactly needs (K is recomputed: the same product, the same bits)."""
        return {"W1_start": self.W1_start, "P": self.P, "H_sum": self.H_sum, "alpha": self.alpha}


class GramSteps:
    """Full-batch iterations for :func:`deepnet.engine.fit.run_loop`, W1 @ X tracked through K.

    Recording, callbacks, checkpoints and divergence stay in the loop; the parameters they
    see are materialised exactly (one wide product), and only when asked for.
    ``optimizer`` may be a learning rate (plain gradient descent).
    """

    def __init__(
        self,
        parameters: dict[str, Array],
        X: Array,
        Y: Array,
        optimizer: Optimizer | float,
        *,
        hidden: str = "relu",
        resume: dict[str, Any] | None = None,
        reg: Regularization = NONE,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            optimizer = GradientDescent(optimizer)
        if not supports(None, optimizer, reg):
            raise InputError(f"the Gram path cannot run {optimizer!r}; use gram=False")
        resume = resume or {}
        self.rest = dict(parameters)
        gram = {k[5:]: v for k, v in resume.items() if k.startswith("gram.")}
        self.first = GramFirstLayer(self.rest.pop("W1"), X, resume=gram or None,
                                    norms=bool(reg.lambd))  # fmt: skip
        self.Y, self.optimizer, self.hidden, self.reg = Y, optimizer, hidden, reg
        self.weight = reg.lambd / X.shape[1] if reg.lambd else 0.0
        self.opt_state = {k[4:]: v for k, v in resume.items() if k.startswith("opt.")}
        if not self.opt_state:
            self.opt_state = optimizer.init_state(parameters)

    def run(self, iteration: int) -> Array:
        """One full-batch step; returns its cost (before the update)."""
        params = {**self.rest, "W1": None}
        squared = self.first.squared_norm() if self.reg.lambd else None
        rest, G, cost, state = step_above_input(
            params, self.first.P, self.Y, self.optimizer, self.opt_state, iteration, self.hidden,
            reg=self.reg, w1_squared=squared,
        )  # fmt: skip
        H, decay, self.opt_state = input_step(self.optimizer, G, state, iteration, self.weight)
        self.first.step(H, decay)
        self.rest = rest
        return cost

    def mark(self) -> tuple[dict[str, Array], tuple[Array, float]]:
        """The layers above the input, the running sum of H and alpha: W1 is rebuilt from
        these."""
        return self.rest, (self.first.H_sum, self.first.alpha)

    def parameters(self, mark: tuple | None = None) -> dict[str, Array]:
        """All parameters, W1 included, now or at ``mark``."""
        rest, first = (self.rest, None) if mark is None else mark
        return in_course_order({**rest, "W1": self.first.W1(first)})

    def resume_state(self) -> dict[str, Any]:
        """The optimizer's state and the Gram arrays (``gram.*``): an exact continuation."""
        state = {f"opt.{k}": v for k, v in self.opt_state.items()}
        return state | {f"gram.{k}": v for k, v in self.first.state().items()}

    def close(self) -> None:
        """Nothing to release."""
