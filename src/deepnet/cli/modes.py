"""The ways ``deepnet train`` gets its data and trains: in memory, streamed from a file
(``--stream FILE``), or data-parallel over MPI ranks (``--distributed``), each a small class
with ``train(settings, device, start, **hooks)`` and ``scores(model, device)``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from deepnet.checkpoint import fingerprint
from deepnet.cli.runs import Resume, check_same_data, file_fingerprint, resume_data
from deepnet.constants import CLASS_NAMES
from deepnet.data import Dataset, load_cat_data
from deepnet.initialization import draw_parameters, place
from deepnet.model_io import Model
from deepnet.optim import state_on
from deepnet.scoring import score_split
from deepnet.settings import TrainSettings
from deepnet.training import TrainState, prepare, train


def run_training(
    settings: TrainSettings,
    data: Dataset,
    device: str,
    callback: Any = None,
    *,
    start: TrainState | None = None,
    **hooks: Any,
) -> TrainState:
    """The in-memory run for ``settings``: :func:`deepnet.training.train`, the body of
    ``L_layer_model`` / ``two_layer_model`` (a test holds them equal), from ``start`` if
    given. ``hooks`` (checkpoint_every, on_checkpoint, should_stop) go to the loop."""
    return train(
        data.train_x, data.train_y, settings.layer_dims, init=settings.init, seed=settings.seed,
        learning_rate=None, num_iterations=settings.num_iterations,
        device=device, dtype=settings.dtype, start=start, batch_size=settings.batch_size,
        record_every=settings.record_every, callback=callback, hidden=settings.hidden, **hooks,
        **settings.training_options(),
    )  # fmt: skip


def device_state(settings: TrainSettings, device: str, start: TrainState | None) -> TrainState:
    """A run's starting state on ``device``: freshly drawn, or a checkpoint's, placed."""
    if start is None:
        drawn = draw_parameters(settings.layer_dims, settings.init, settings.seed)  # type: ignore[arg-type]
        return TrainState(place(drawn, device, settings.dtype))
    params = place(start.parameters, device, settings.dtype)
    resume = state_on(dict(start.resume), params["W1"])
    return TrainState(params, list(start.costs), start.iteration, resume=resume)


class MemoryRun:
    """The course's data in memory (``--data``, ``--synthetic`` or $DEEPNET_DATA)."""

    mode = "in memory"

    def __init__(self, args: argparse.Namespace, resume: Resume | None) -> None:
        if resume is not None:
            self.data = resume_data(args, resume)
        else:
            self.data = load_cat_data(args.data, synthetic=args.synthetic)
        data = self.data
        self.source, self.synthetic, self.classes = data.source, data.synthetic, data.classes
        self.record = {
            "source": data.source,
            "synthetic": data.synthetic,
            "folder": None if data.folder is None else str(data.folder.resolve()),
            "fingerprint": fingerprint(data.train_x, data.train_y),
        }

    def train(self, settings: TrainSettings, device: str, start: Any, **hooks: Any) -> TrainState:
        """Train on the whole set in memory."""
        return run_training(settings, self.data, device, start=start, **hooks)

    def scores(self, model: Model, device: str) -> dict[str, Any]:
        """Train and test scores."""
        return {split: score_split(model, self.data, split, device) for split in ("train", "test")}


class StreamRun:
    """A course-layout HDF5 file read batch by batch (``--stream FILE``); it need not fit."""

    mode = "streamed"

    def __init__(self, path: Path, resume: Resume | None) -> None:
        from deepnet.hdf5_rows import open_course_file

        self.file = open_course_file(path)
        digest = file_fingerprint(path)
        if resume is not None:
            check_same_data(resume, digest, str(path))
        self.source, self.synthetic, self.classes = str(path), False, CLASS_NAMES
        self.record = {"source": str(path), "synthetic": False, "folder": None,
                       "stream": str(path.resolve()), "fingerprint": digest}  # fmt: skip

    def train(self, settings: TrainSettings, device: str, start: Any, **hooks: Any) -> TrainState:
        """Train through :func:`deepnet.streaming.fit_stream`."""
        from deepnet.streaming import fit_stream

        return fit_stream(
            self.file, device_state(settings, device, start),
            optimizer=settings.training_options()["optimizer"],
            num_iterations=settings.num_iterations,
            hidden=settings.hidden, batch_size=settings.batch_size, seed=settings.seed,
            lambd=settings.lambd, keep_prob=settings.keep_prob,
            record_every=settings.record_every, **hooks,
        )  # fmt: skip

    def scores(self, model: Model, device: str) -> None:
        """None: a streamed set is not scored in memory (``deepnet evaluate`` does that)."""
        return None


class DistributedRun(MemoryRun):
    """Full batch, each MPI rank training on its shard of the in-memory set."""

    mode = "distributed"

    def __init__(self, args: argparse.Namespace, resume: Resume | None, comm: Any) -> None:
        super().__init__(args, resume)
        self.comm = comm

    def shard(self, rank: int, size: int) -> tuple[Any, Any, int]:
        """This rank's host X, Y and the number of examples of all ranks."""
        from deepnet.distributed import shard_bounds

        m = self.data.train_x.shape[1]
        a, b = shard_bounds(m, rank, size)
        return self.data.train_x[:, a:b], self.data.train_y[:, a:b], m

    def train(self, settings: TrainSettings, device: str, start: Any, **hooks: Any) -> TrainState:
        """Train through :func:`deepnet.distributed.fit_distributed` on this rank's shard."""
        from deepnet import distributed

        comm = self.comm
        X, Y, m = self.shard(comm.Get_rank(), comm.Get_size())
        X, Y = prepare(X, Y, device, settings.dtype)
        reducer = distributed.Allreduce(comm, X, "auto")
        return distributed.fit_distributed(
            X, Y, device_state(settings, device, start), comm=comm, m_total=m,
            optimizer=settings.training_options()["optimizer"],
            num_iterations=settings.num_iterations,
            hidden=settings.hidden, record_every=settings.record_every, reducer=reducer,
            lambd=settings.lambd, keep_prob=settings.keep_prob, seed=settings.seed, **hooks,
        )  # fmt: skip


class DistributedFileRun(DistributedRun, StreamRun):
    """Full batch over MPI ranks, each reading only its shard of a file (``--stream FILE``)."""

    mode = "distributed, each rank reading its shard of the file"

    scores = StreamRun.scores  # the file is not held in memory to score it

    def __init__(self, path: Path, resume: Resume | None, comm: Any) -> None:
        StreamRun.__init__(self, path, resume)
        self.comm = comm

    def shard(self, rank: int, size: int) -> tuple[Any, Any, int]:
        """Examples [start, stop) of the file, read by this rank alone."""
        from deepnet.distributed import load_shard, shard_bounds

        m = self.file.m
        return (*load_shard(self.file, *shard_bounds(m, rank, size)), m)


def examples(run: Any) -> int | None:
    """The number of training examples of a run (an epoch's worth), where known."""
    if hasattr(run, "file"):
        return int(run.file.m)
    data = getattr(run, "data", None)
    return None if data is None else int(data.train_x.shape[1])
