"""Scoring a model: probabilities on any device, accuracy and confusion counts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepnet import backend
from deepnet.data import Dataset
from deepnet.errors import InputError
from deepnet.kernels import predict_proba
from deepnet.model_io import Model


@dataclass
class Score:
    """Predictions on one split, with accuracy and confusion counts."""

    probabilities: np.ndarray  # (m,) P(class 1)
    labels: np.ndarray  # (m,) 0/1

    @property
    def predictions(self) -> np.ndarray:
        """0/1 predictions at the course's threshold, 0.5."""
        return (self.probabilities > 0.5).astype(np.int64)

    @property
    def accuracy(self) -> float:
        """The fraction of correct predictions."""
        return float(np.mean(self.predictions == self.labels))

    def confusion(self) -> np.ndarray:
        """Counts [true class, predicted class]."""
        counts = np.zeros((2, 2), dtype=np.int64)
        np.add.at(counts, (self.labels, self.predictions), 1)
        return counts

    def summary(self) -> str:
        """Accuracy and how many were right, e.g. ``0.8 (40/50)``."""
        right = int(np.sum(self.predictions == self.labels))
        return f"{self.accuracy:.6g} ({right}/{self.labels.size})"


def probabilities(model: Model, X: np.ndarray, device: str | None) -> np.ndarray:
    """P(class 1) for each column of host X, computed on ``device``, as a host (m,) array."""
    if X.shape[0] != model.layer_dims[0]:
        raise InputError(
            f"the model takes {model.layer_dims[0]} inputs per picture, the data has {X.shape[0]}"
        )
    X_device = backend.to_device(X, device, model.dtype)
    proba = predict_proba(X_device, model.parameters_on(device), hidden=model.hidden)
    return backend.to_numpy(proba).reshape(-1)


def score_split(model: Model, data: Dataset, split: str, device: str | None) -> Score:
    """A model's predictions on the ``train`` or ``test`` split of a data set."""
    X, Y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
    return Score(probabilities(model, X, device), Y.reshape(-1).astype(np.int64))
