"""``deepnet train``: in memory, streamed from a file (``--stream FILE``) or data-parallel
over MPI ranks (``mpiexec -n N deepnet train --distributed``).

Every mode runs the one loop (:mod:`deepnet.engine.fit`), so every mode gets the same
checkpoints, clean stop on SIGINT/SIGTERM, ``--resume`` to the uninterrupted result,
progress bar, saved model and exit statuses (:mod:`deepnet.cli.common`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from deepnet import backend, threads
from deepnet.checkpoint import Checkpoint, fingerprint, save_checkpoint
from deepnet.cli import common
from deepnet.cli.common import Progress, StopRequest, check_writable, device_line, quote
from deepnet.cli.runs import (
    Resume,
    check_same_data,
    file_fingerprint,
    resume_data,
    resume_point,
    stream_path,
    train_paths,
)
from deepnet.data import Dataset, load_cat_data
from deepnet.errors import DivergenceError, InputError
from deepnet.initialization import draw_parameters, place
from deepnet.model_io import Model, save_model
from deepnet.optim import state_on
from deepnet.scoring import score_split
from deepnet.settings import TrainSettings, check_print_every, train_settings
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
        learning_rate=settings.learning_rate, num_iterations=settings.num_iterations,
        device=device, dtype=settings.dtype, start=start, batch_size=settings.batch_size,
        record_every=settings.record_every, callback=callback, hidden=settings.hidden, **hooks,
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
        from deepnet.streaming import open_course_file

        self.file = open_course_file(path)
        digest = file_fingerprint(path)
        if resume is not None:
            check_same_data(resume, digest, str(path))
        self.source, self.synthetic, self.classes = str(path), False, ("non-cat", "cat")
        self.record = {"source": str(path), "synthetic": False, "folder": None,
                       "stream": str(path.resolve()), "fingerprint": digest}  # fmt: skip

    def train(self, settings: TrainSettings, device: str, start: Any, **hooks: Any) -> TrainState:
        """Train through :func:`deepnet.streaming.fit_stream`."""
        from deepnet.streaming import fit_stream

        return fit_stream(
            self.file, device_state(settings, device, start),
            learning_rate=settings.learning_rate, num_iterations=settings.num_iterations,
            hidden=settings.hidden, batch_size=settings.batch_size, seed=settings.seed,
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
            learning_rate=settings.learning_rate, num_iterations=settings.num_iterations,
            hidden=settings.hidden, record_every=settings.record_every, reducer=reducer, **hooks,
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


@dataclass
class Setup:
    """Everything checked before any training: settings, data, device, paths."""

    settings: TrainSettings
    run: Any
    device: str
    resume: Resume | None
    out: Path
    plot: Path
    checkpoint: Path


def setup_run(args: argparse.Namespace, comm: Any = None) -> Setup:
    """Check the options and the resume point, load or open the data, check the outputs."""
    if args.checkpoint_every < 1:
        raise InputError(f"--checkpoint-every must be at least 1, got {args.checkpoint_every}")
    resume = resume_point(args) if args.resume is not None else None
    settings = resume.settings if resume is not None else train_settings(args)
    if resume is not None and "print_every" in getattr(args, "given", set()):
        check_print_every(args.print_every, settings.record_every)  # display only: allowed
        settings = replace(settings, print_every=args.print_every)
    device = backend.resolve_device(args.device)
    stream = stream_path(args, resume)
    if stream is not None and (args.data is not None or args.synthetic):
        raise InputError("--stream FILE is the training data; leave out --data/--synthetic")
    if comm is not None:
        if settings.batch_size is not None:
            raise InputError("--distributed trains full batch; leave out --batch-size")
        run: Any = (DistributedRun(args, resume, comm) if stream is None
                    else DistributedFileRun(stream, resume, comm))  # fmt: skip
    elif stream is not None:
        run = StreamRun(stream, resume)
    else:
        run = MemoryRun(args, resume)
    out, plot, checkpoint = train_paths(args, resume)
    if comm is None or comm.Get_rank() == 0:
        for path in (out, plot, checkpoint):  # find out now, not after a long run
            check_writable(path)
        if resume is None and checkpoint.exists():
            raise InputError(
                f"{checkpoint} holds an unfinished run: continue it with deepnet train --resume "
                f"{quote(checkpoint)}, or delete it (or pass --checkpoint) to start over"
            )
    return Setup(settings, run, device, resume, out, plot, checkpoint)


def train_command(args: argparse.Namespace) -> int:
    """``deepnet train``: train (or continue) a run, save the model and its cost curve, report.

    A checkpoint is written every ``--checkpoint-every`` iterations and when SIGINT or
    SIGTERM stops the run (exit status 128 + the signal's number); ``--resume`` continues
    from it to the same final parameters as an uninterrupted run. It is removed once the
    model is saved. Under MPI, rank 0 alone prints and writes; the ranks agree on every
    check and on stopping, so none is left waiting.
    """
    comm = None
    if args.distributed:
        from deepnet import distributed

        comm = distributed.world()
        common.SILENT = comm.Get_rank() != 0
        setup = distributed.agree(comm, lambda: setup_run(args, comm), "checking the run")
    else:
        setup = setup_run(args)
    root = comm is None or comm.Get_rank() == 0
    settings, run, device, resume = setup.settings, setup.run, setup.device, setup.resume
    if root:
        print(f"data: {run.source}")
        if run.synthetic:
            print("      (set DEEPNET_DATA or pass --data to train on the course's cat pictures)")
        ranks = "" if comm is None else f"; {comm.Get_size()} MPI ranks"
        print(f"device: {device_line(device)}{ranks}")
        batch = "full batch" if settings.batch_size is None else f"batch {settings.batch_size}"
        print(
            f"model: {settings.model} {'-'.join(map(str, settings.layer_dims))}, init "
            f"{settings.init}, {settings.dtype}, learning rate {settings.learning_rate}, "
            f"{settings.num_iterations} iterations, {batch}; {settings.hidden} hidden "
            f"layers, {run.mode}"
        )
    start = resume.state if resume is not None else None
    if start is not None and root:
        print(f"resuming {resume.path} at iteration {start.iteration}")

    def write_checkpoint(state: TrainState) -> None:
        if not root:
            return
        host = {k: backend.to_numpy(v) for k, v in state.parameters.items()}
        if not all(np.isfinite(v).all() for v in host.values()):
            return  # diverging: keep the last good checkpoint; the loop raises at the next record
        point = Checkpoint(
            parameters=host, costs=list(state.costs), iteration=state.iteration,
            settings=asdict(settings), data=run.record,
            outputs={"out": str(setup.out.resolve()), "plot": str(setup.plot.resolve())},
            layer_dims=settings.layer_dims, dtype=settings.dtype, model=settings.model,
            classes=run.classes, resume=state.resume, hidden=settings.hidden,
        )  # fmt: skip
        save_checkpoint(point, setup.checkpoint)

    def keep_going(state: TrainState) -> None:
        """A checkpoint that cannot be written (disk full) is said, and the run goes on."""
        try:
            write_checkpoint(state)
        except OSError as exc:
            print(f"deepnet: warning: could not write the checkpoint at iteration "
                  f"{state.iteration} ({common.os_error_line(exc)}); training goes on",
                  file=sys.stderr)  # fmt: skip

    initial = 0 if start is None else start.iteration
    progress = Progress(settings.num_iterations, settings.print_every if root else 0,
                        args.progress if root else False, initial=initial)  # fmt: skip
    began = time.perf_counter()
    stop = StopRequest()
    try:
        with stop, threads.blas_threads(resume=None if start is None else start.resume):
            state = run.train(
                settings, device, start, callback=progress,
                checkpoint_every=args.checkpoint_every, on_checkpoint=keep_going,
                should_stop=stop,
            )  # fmt: skip
            backend.synchronize(device)
            # Stopped, the checkpoint is all there is: it must be written. Finished, the model
            # file is what counts; the checkpoint only guards its writing.
            (write_checkpoint if state.stopped_early else keep_going)(state)
    except DivergenceError:
        progress.close(finished=False)
        if root:
            setup.checkpoint.unlink(missing_ok=True)  # the same settings diverge again from it
        raise
    progress.close(finished=not state.stopped_early)
    resume_line = f"deepnet train --resume {quote(setup.checkpoint)}"
    if state.stopped_early:
        signum = stop.signum or signal.SIGINT  # another rank may have been the one signalled
        if root:
            print(
                f"deepnet: stopped by {signal.Signals(signum).name} after iteration "
                f"{state.iteration} of {settings.num_iterations}; saved the run to "
                f"{setup.checkpoint}; continue it with: {resume_line}",
                file=sys.stderr,
            )
        return 128 + signum
    if not root:
        return 0
    extra: dict[str, Any] = {} if start is None else {"resumed_at": start.iteration}
    if comm is not None:
        extra["ranks"] = comm.Get_size()
    try:
        report = save_run(setup, state, time.perf_counter() - began, extra)
    except KeyboardInterrupt:
        common.error(f"interrupted while saving; the finished run is in {setup.checkpoint}: "
                     f"{resume_line}")  # fmt: skip
        return 130
    except OSError as exc:
        safe = (f"; the finished run is in {setup.checkpoint}: {resume_line}"
                if setup.checkpoint.exists() else "")  # fmt: skip
        common.error(f"could not save the model: {common.os_error_line(exc)}{safe}")
        return 1
    setup.checkpoint.unlink(missing_ok=True)  # the model holds it all now
    print(report)
    return 0


def save_run(setup: Setup, state: TrainState, seconds: float, extra: dict[str, Any]) -> str:
    """Score a finished run (where its data is in memory), save the model and its cost curve;
    returns the closing report."""
    settings, run = setup.settings, setup.run
    model = Model(
        parameters={k: backend.to_numpy(v) for k, v in state.parameters.items()},
        layer_dims=settings.layer_dims, classes=run.classes, dtype=settings.dtype,
        model=settings.model, costs=state.costs, hidden=settings.hidden,
    )  # fmt: skip
    scores = run.scores(model, setup.device)
    accuracy = {} if scores is None else {
        "train_accuracy": scores["train"].accuracy, "test_accuracy": scores["test"].accuracy,
    }  # fmt: skip
    model.training = settings.as_metadata() | {
        "device": setup.device, "data": run.source, "synthetic": run.synthetic,
        "seconds": round(seconds, 3), **accuracy, **extra,
    }  # fmt: skip
    save_model(model, setup.out)
    from deepnet.plots import cost_curve_png  # Pillow drawing, only here

    width, height = cost_curve_png(model.costs, setup.plot, record_every=settings.record_every,
                                   learning_rate=settings.learning_rate)  # fmt: skip
    lines = [
        f"trained in {seconds:.1f} s; saved the model to {setup.out}",
        f"cost curve: {setup.plot} ({width}x{height} pixels)",
    ]
    if scores is None:
        lines.append(f"accuracy: deepnet evaluate {quote(setup.out)} --data DIR")
    else:
        lines += [f"{split} accuracy: {scores[split].summary()}" for split in ("train", "test")]
    return "\n".join(lines)
