"""Checkpoints: an unfinished training run, saved so that it can be continued exactly.

A checkpoint is a model file (:mod:`deepnet.model_io`: ZIP of JSON and ``.npy``, no pickle,
written atomically, checked against its dims on load) whose ``training`` metadata holds a
``checkpoint`` record: the next iteration to run, every setting the run was started with,
where its outputs go, and which data it trains on, with a fingerprint of the exact arrays.
Continuing from it with the same data reproduces the uninterrupted run bit for bit: the
parameters, costs and the step source's own state (the optimizer's, the Gram path's
``W1_start``, ``P`` and ``H_sum``; stored as ``state.*`` arrays) are stored exactly, and
mini-batches are ordered by (seed, iteration) only.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepnet.backend import to_numpy
from deepnet.constants import CLASS_NAMES
from deepnet.errors import ModelFileError
from deepnet.model_io import Model, load_model, save_model

FORMAT = "deepnet-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A run in progress: host parameters and costs so far, what to run next and on what."""

    parameters: dict[str, np.ndarray]
    costs: list[float]
    iteration: int  # the next iteration to run
    settings: dict[str, Any]  # the run's settings, as ``deepnet train`` stores them
    data: dict[str, Any]  # source, synthetic, folder, fingerprint of the training arrays
    outputs: dict[str, str]  # where the finished run writes its model and cost curve
    layer_dims: list[int]
    dtype: str
    model: str = "L-layer"
    classes: tuple[str, str] = CLASS_NAMES
    # What the step source needs beyond the parameters (TrainState.resume): arrays (the
    # optimizer's state, the Gram path's W1_start, P, H_sum) and plain numbers, exactly.
    resume: dict[str, Any] = field(default_factory=dict)
    hidden: str = "relu"


def fingerprint(X: Any, Y: Any) -> str:
    """SHA-256 of the training arrays as float64 (shape included): same data, same digest."""
    digest = hashlib.sha256()
    for array in (X, Y):
        host = np.ascontiguousarray(to_numpy(array), dtype=np.float64)
        digest.update(repr(host.shape).encode())
        digest.update(host.tobytes())
    return digest.hexdigest()


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (parameters may live on any device)."""
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "next_iteration": checkpoint.iteration,
        "settings": checkpoint.settings,
        "data": checkpoint.data,
        "outputs": checkpoint.outputs,
        "resume_values": {
            k: v for k, v in checkpoint.resume.items() if isinstance(v, (int, float, str))
        },
    }
    arrays = {
        k: to_numpy(v) for k, v in checkpoint.resume.items() if not isinstance(v, (int, float, str))
    }
    model = Model(
        parameters=checkpoint.parameters,
        layer_dims=checkpoint.layer_dims,
        classes=checkpoint.classes,
        dtype=checkpoint.dtype,
        model=checkpoint.model,
        training={"checkpoint": record},
        costs=checkpoint.costs,
        hidden=checkpoint.hidden,
        state=arrays,
    )
    return save_model(model, path)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint; :class:`ModelFileError` for anything else or anything inconsistent.

    The parameters are checked by :func:`deepnet.model_io.load_model` (shapes against the
    declared dims, dtype, finiteness); here the record itself: its format, an iteration
    within the run, and as many recorded costs as iterations ``0, r, 2r, ...`` before it.
    The settings are the caller's to validate (``deepnet train`` runs them through the
    same checks as its command line).
    """
    model = load_model(path)
    record = model.training.get("checkpoint")
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ModelFileError(
            f"{path}: a model file, not a checkpoint (a finished run has nothing to resume)"
        )
    version = record.get("format_version")
    if not _is_int(version) or not 1 <= version <= FORMAT_VERSION:
        raise ModelFileError(f"{path}: checkpoint format {version!r} is not one this deepnet reads")
    settings, data, outputs = record.get("settings"), record.get("data"), record.get("outputs")
    if not all(isinstance(part, dict) for part in (settings, data, outputs)):
        raise ModelFileError(f"{path}: the checkpoint record lacks its settings, data or outputs")
    iteration, total = record.get("next_iteration"), settings.get("num_iterations")
    every = settings.get("record_every")
    if not (_is_int(iteration) and _is_int(total) and _is_int(every) and every >= 1):
        raise ModelFileError(f"{path}: the checkpoint's iteration or settings are not integers")
    if not 0 <= iteration <= total:
        raise ModelFileError(
            f"{path}: the checkpoint is at iteration {iteration}, outside its run of {total}"
        )
    if len(model.costs) != math.ceil(iteration / every):
        raise ModelFileError(
            f"{path}: {len(model.costs)} recorded costs do not match iteration {iteration} "
            f"with a cost every {every}; the checkpoint is inconsistent"
        )
    if not isinstance(data.get("fingerprint"), str):
        raise ModelFileError(f"{path}: the checkpoint does not say which data it trains on")
    values = record.get("resume_values", {})
    if not isinstance(values, dict) or not all(
        isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in values.values()
    ):
        raise ModelFileError(f"{path}: the checkpoint's resume values are not plain numbers")
    return Checkpoint(
        parameters=model.parameters,
        costs=model.costs,
        iteration=iteration,
        settings=settings,
        data=data,
        outputs={k: v for k, v in outputs.items() if isinstance(v, str)},
        layer_dims=model.layer_dims,
        dtype=model.dtype,
        model=model.model,
        classes=model.classes,
        resume={**model.state, **values},
        hidden=model.hidden,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
