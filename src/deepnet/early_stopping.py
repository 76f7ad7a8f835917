"""Early stopping on a held-out validation fraction, as scikit-learn's ``MLPClassifier``
(``early_stopping=True``, ``validation_fraction``, ``n_iter_no_change``, ``tol``).

Before training, ``validation_fraction`` of the examples (a seeded draw) are set aside. At
every recorded iteration the validation accuracy of the current parameters is measured;
a score better than the best so far by more than ``tol`` resets the count, anything else
adds one; after ``patience`` recorded iterations in a row without such an improvement
the run stops, and the parameters with the best score (the first of equal ones) are the
result. The watch's state (best parameters, best score, count, the scores) travels in
the run's resume record as ``stop.*``, so a checkpointed run resumes to the same result.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepnet.backend import array_namespace, to_numpy
from deepnet.errors import InputError
from deepnet.kernels import accuracy, predict
from deepnet.validation import check_count

Array = Any


@dataclass(frozen=True)
class EarlyStopping:
    """The rule: hold out ``validation_fraction`` in (0, 1), stop after ``patience``
    (>= 1) recorded iterations without a validation-accuracy gain above ``tol`` (>= 0)."""

    validation_fraction: float = 0.1
    patience: int = 10
    tol: float = 1e-4

    def __post_init__(self) -> None:
        f = self.validation_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
            raise InputError(f"validation_fraction must be in (0, 1), e.g. 0.1; got {f!r}")
        check_count(self.patience, "patience", minimum=1)
        tol = self.tol
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) \
                or tol < 0:  # fmt: skip
            raise InputError(f"tol must be a finite number >= 0, e.g. 1e-4; got {tol!r}")

    def split(self, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Host column indices (training, validation), each in the data's order.

        ``ceil(validation_fraction * m)`` examples are held out (scikit-learn's count), drawn
        with ``RandomState(seed)``; both parts must be non-empty.
        """
        n_val = math.ceil(self.validation_fraction * m)
        if not 1 <= n_val < m:
            raise InputError(
                f"early stopping holds out {n_val} of {m} examples (validation_fraction "
                f"{self.validation_fraction}): both the training and the validation part need "
                "at least one"
            )
        order = np.random.RandomState(seed).permutation(m)
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    def config(self) -> dict[str, Any]:
        """The rule as JSON values (model files)."""
        return {"validation_fraction": self.validation_fraction, "patience": self.patience,
                "tol": self.tol}  # fmt: skip


@dataclass
class Watch:
    """A run's early-stopping state: scores so far, the best parameters, the count."""

    rule: EarlyStopping
    X: Array  # the validation examples, on the training device
    Y: Array
    hidden: str = "relu"
    best_score: float = -1.0
    best_iteration: int = -1
    bad: int = 0
    best: dict[str, Array] | None = None
    scores: list[float] = field(default_factory=list)

    @property
    def done(self) -> bool:
        """True once ``patience`` recorded iterations in a row have not improved."""
        return self.bad >= self.rule.patience

    def record(self, parameters: dict[str, Array], iteration: int) -> float:
        """Score ``parameters`` (those after ``iteration``'s update) on the held-out part."""
        score = accuracy(predict(self.X, None, parameters, hidden=self.hidden), self.Y)
        self.scores.append(score)
        self.bad = 0 if score > self.best_score + self.rule.tol else self.bad + 1
        if score > self.best_score:
            xp = array_namespace(*parameters.values())
            self.best_score, self.best_iteration = score, iteration
            self.best = {k: xp.asarray(v, copy=True) for k, v in parameters.items()}
        return score

    def state(self) -> dict[str, Any]:
        """The resume record's ``stop.*`` entries."""
        out: dict[str, Any] = {
            "stop.best_score": self.best_score,
            "stop.best_iteration": self.best_iteration,
            "stop.bad": self.bad,
        }
        if self.best is not None:
            xp = array_namespace(self.X)
            out["stop.scores"] = xp.asarray(self.scores, dtype=self.X.dtype)
            out |= {f"stop.{k}": v for k, v in self.best.items()}
        return out

    def restore(self, resume: dict[str, Any]) -> None:
        """Continue from a resume record's ``stop.*`` entries (nothing if there are none)."""
        if "stop.bad" not in resume:
            return
        self.best_score = float(resume["stop.best_score"])
        self.best_iteration, self.bad = int(resume["stop.best_iteration"]), int(resume["stop.bad"])
        if "stop.scores" in resume:
            self.scores = [float(s) for s in to_numpy(resume["stop.scores"])]
            names = [k[5:] for k in resume if re.fullmatch(r"stop\.[Wb][0-9]+", k)]
            self.best = {k: resume[f"stop.{k}"] for k in names}

    def summary(self) -> dict[str, Any]:
        """What a model file records about the early stop."""
        return {**self.rule.config(), "best_iteration": self.best_iteration,
                "best_validation_accuracy": self.best_score, "stopped": self.done,
                "validation_scores": list(self.scores)}  # fmt: skip
