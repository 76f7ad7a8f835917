"""``deepnet train``: in memory, streamed from a file (``--stream FILE``) or data-parallel
over MPI ranks (``mpiexec -n N deepnet train --distributed``).

Every mode runs the one loop (:mod:`deepnet.engine.fit`), so every mode gets the same
checkpoints, clean stop on SIGINT/SIGTERM, ``--resume`` to the uninterrupted result,
progress bar, saved model and exit statuses (:mod:`deepnet.cli.common`).

Before any work every output is checked (:mod:`deepnet.cli.runs`) and the checkpoint is
locked (:class:`deepnet.paths.CheckpointLock`) until the run is over, so two runs never
share one. A periodic checkpoint that cannot be written is a warning; a model that cannot be
written is an error naming the checkpoint the run is safe in.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from deepnet import backend, threads
from deepnet.checkpoint import Checkpoint, save_checkpoint
from deepnet.cli import common, options
from deepnet.cli.common import Progress, StopRequest, device_line, quote
from deepnet.cli.modes import (
    DistributedFileRun,
    DistributedRun,
    MemoryRun,
    StreamRun,
    examples,
)
from deepnet.cli.runs import (
    Resume,
    checkpoint_target,
    lock_checkpoint,
    refuse_non_checkpoint,
    resume_point,
    stream_path,
    train_outputs,
    training_inputs,
)
from deepnet.errors import DivergenceError, InputError
from deepnet.fileio import WriteError, clean_stale_temporaries
from deepnet.model_io import Model, save_model
from deepnet.paths import CheckpointLock, safe_text
from deepnet.settings import TrainSettings, check_print_every, train_settings
from deepnet.training import TrainState


@dataclass
class Setup:
    """Everything checked before any training: settings, data, device, paths.

    ``out``, ``plot`` and ``checkpoint`` are the paths to write (symlinks resolved, checked
    by :func:`deepnet.paths.check_outputs`); ``shown`` has them as the user gave them, for
    messages. ``lock`` (rank 0 only) holds the checkpoint until the run is over.
    """

    settings: TrainSettings
    run: Any
    device: str
    resume: Resume | None
    out: Path
    plot: Path
    checkpoint: Path
    shown: dict[str, str] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    lock: CheckpointLock | None = None

    def name(self, key: str) -> str:
        """An output ("out", "plot", "checkpoint") as the user gave it, safe to print."""
        return safe_text(self.shown.get(key) or getattr(self, key))


def setup_run(args: argparse.Namespace, comm: Any = None) -> Setup:
    """Check the options, the outputs and the inputs, lock the checkpoint, then load or open
    the data: everything that can be refused is refused before any work.

    The checkpoint is locked before it is read (``--resume``) or created. Under MPI, rank 0
    alone checks the outputs and takes the lock; the caller runs this on every rank inside
    :func:`deepnet.distributed.agree`, so a refusal on any rank reaches all.
    """
    options.check_train_options(args)
    root = comm is None or comm.Get_rank() == 0
    settings = train_settings(args) if args.resume is None else None  # the options first
    lock = None
    try:
        if root and args.resume is not None:
            refuse_non_checkpoint(args)
            lock = lock_checkpoint(args)
        return _setup(args, comm, settings, lock)
    except BaseException:
        if lock is not None:
            release_lock(lock)
        raise


def acquire_lock(checkpoint: Path) -> CheckpointLock:
    """:class:`CheckpointLock` on ``checkpoint``, remembering the folders it had to create."""
    missing = [p for p in checkpoint.parents if not p.exists()]
    lock = CheckpointLock(checkpoint).acquire()
    lock.created = missing  # type: ignore[attr-defined]
    return lock


def release_lock(lock: CheckpointLock) -> None:
    """Release a lock taken for a run that was then refused: no empty folder is left behind."""
    lock.release()
    for folder in getattr(lock, "created", []):  # deepest first
        try:
            folder.rmdir()
        except OSError:
            break  # not empty (or not ours to remove): keep it and its parents


def _setup(
    args: argparse.Namespace, comm: Any, settings: TrainSettings | None, lock: CheckpointLock | None
) -> Setup:
    root = comm is None or comm.Get_rank() == 0
    resume = resume_point(args) if args.resume is not None else None
    if resume is not None:
        settings = resume.settings
    assert settings is not None  # fresh: checked by setup_run
    if resume is not None and "print_every" in getattr(args, "given", set()):
        check_print_every(args.print_every, settings.record_every)  # display only: allowed
        settings = replace(settings, print_every=args.print_every)
    device = backend.cli_device(args.backend, args.device, settings.dtype)
    if comm is not None and device not in ("cpu", "cuda"):
        raise InputError(f"--distributed trains NumPy or CuPy arrays, not {device}; leave out "
                         "--backend (or use numpy or cupy)")  # fmt: skip
    stream = stream_path(args, resume)
    if stream is not None and (args.data is not None or args.synthetic):
        raise InputError("--stream FILE is the training data; leave out --data/--synthetic")
    if (comm is not None or stream is not None) and settings.early_stopping:
        raise InputError(
            "--early-stopping holds out examples of data in memory; leave it out with "
            "--stream or --distributed (--lambd, --keep-prob, the optimizers and decays work "
            "there)"
        )
    if comm is not None and settings.batch_size is not None:
        raise InputError("--distributed trains full batch; leave out --batch-size")
    options.check_gram(args, in_memory=comm is None and stream is None)
    inputs = training_inputs(args, resume, stream)
    outs, notices = {}, []
    if root:  # every output, against each other and the inputs
        outs = train_outputs(args, resume, checkpoint_target(args), inputs)
        checkpoint = outs["checkpoint"]
        if lock is None:  # a fresh run: locked before its checkpoint is looked at
            lock = acquire_lock(checkpoint.path)
        if checkpoint.replaces is not None and (
            resume is None or not os.path.samefile(resume.path, checkpoint.path)
        ):
            raise InputError(
                f"{checkpoint.label} {safe_text(checkpoint.given)} holds an unfinished run: "
                f"continue it with deepnet train --resume {quote(Path(checkpoint.given))}, or "
                "delete it (or pass --checkpoint) to start over"
            )
        notices = [o.notice for key, o in outs.items() if o.notice and key != "checkpoint"]
        for o in outs.values():
            clean_stale_temporaries(o.path)  # left by a run killed while writing it
    try:
        if comm is not None:
            run: Any = (DistributedRun(args, resume, comm) if stream is None
                        else DistributedFileRun(stream, resume, comm))  # fmt: skip
        elif stream is not None:
            run = StreamRun(stream, resume)
        else:
            run = MemoryRun(args, resume)
    except BaseException:
        if lock is not None:
            release_lock(lock)
        raise
    paths = {k: o.path for k, o in outs.items()} or dict.fromkeys(("out", "plot", "checkpoint"))
    return Setup(
        settings, run, device, resume, paths["out"], paths["plot"], paths["checkpoint"],
        shown={k: o.given for k, o in outs.items()}, notices=notices, lock=lock,
    )  # fmt: skip


def train_command(args: argparse.Namespace) -> int:
    """``deepnet train``: train (or continue) a run, save the model and its cost curve, report.

    A checkpoint is written once ``--checkpoint-seconds`` of training have passed since the
    last (and every ``--checkpoint-every`` iterations, if given), at the end, and when SIGINT
    or SIGTERM stops the run (exit status 128 + the signal's number); ``--resume`` continues
    from it to the same final parameters as an uninterrupted run. It is removed once the
    model is saved. Under MPI, rank 0 alone prints and writes; the ranks agree on every
    check and on stopping, so none is left waiting.
    """
    comm = None
    if args.distributed:
        from deepnet import distributed

        comm = distributed.world()
        common.SILENT = comm.Get_rank() != 0
        done: list[Setup] = []  # rank 0's lock must go if another rank fails
        try:
            setup = distributed.agree(
                comm, lambda: done.append(setup_run(args, comm)) or done[0], "checking the run"
            )
        except BaseException:
            if done and done[0].lock is not None:
                release_lock(done[0].lock)
            raise
    else:
        setup = setup_run(args)
    try:
        return _train(args, setup, comm)
    finally:
        if setup.lock is not None:
            setup.lock.release()  # after the checkpoint's last write or its removal


def _train(args: argparse.Namespace, setup: Setup, comm: Any) -> int:
    root = comm is None or comm.Get_rank() == 0
    settings, run, device, resume = setup.settings, setup.run, setup.device, setup.resume
    if root:
        print(f"data: {safe_text(run.source)}")
        if run.synthetic:
            print("      (set DEEPNET_DATA or pass --data to train on the course's cat pictures)")
        ranks = "" if comm is None else f"; {comm.Get_size()} MPI ranks"
        print(f"device: {device_line(device)}{ranks}")
        length = options.length_text(settings, examples(run))
        print(
            f"model: {settings.model} {'-'.join(map(str, settings.layer_dims))}, init "
            f"{settings.init}, {settings.dtype}, learning rate {settings.learning_rate}, "
            f"{length}; {settings.hidden} hidden layers, {run.mode}"
        )
        if settings.describe():
            print(f"training: {settings.describe()}")
        for notice in setup.notices:
            print(notice)
    start = resume.state if resume is not None else None
    unit = options.unit(settings.batch_size)
    if start is not None and root:
        print(f"resuming {safe_text(resume.path)} at {unit} {start.iteration}")
    saved: list[int] = []  # iterations whose checkpoint was written

    def write_checkpoint(state: TrainState) -> None:
        if not root:
            return
        host = {k: backend.to_numpy(v) for k, v in state.parameters.items()}
        if not all(np.isfinite(v).all() for v in host.values()):
            return  # diverging: keep the last good checkpoint; the loop raises at the next record
        point = Checkpoint(
            parameters=host, costs=list(state.costs), iteration=state.iteration,
            settings=asdict(settings), data=run.record,
            outputs={"out": str(setup.out), "plot": str(setup.plot)},
            layer_dims=settings.layer_dims, dtype=settings.dtype, model=settings.model,
            classes=run.classes, resume=state.resume, hidden=settings.hidden,
        )  # fmt: skip
        save_checkpoint(point, setup.checkpoint)
        saved.append(state.iteration)

    def keep_going(state: TrainState) -> None:
        """A checkpoint that cannot be written (disk full) is said, and the run goes on."""
        try:
            write_checkpoint(state)
        except OSError as exc:
            common.warn(f"could not write the checkpoint at {unit} {state.iteration} "
                        f"({common.os_error_line(exc)}); training goes on")  # fmt: skip

    initial = 0 if start is None else start.iteration
    progress = Progress(settings.num_iterations, settings.print_every if root else 0,
                        args.progress if root else False, initial=initial, unit=unit,
                        examples=examples(run))  # fmt: skip
    saving = not args.no_checkpoint
    began = time.perf_counter()
    stop = StopRequest()
    try:
        resume = None if start is None else start.resume
        with stop, threads.blas_threads(resume=resume, report=common.warn):
            state = run.train(
                settings, device, start, callback=progress, on_step=progress.step,
                on_batch=progress.batch if progress.per > 1 else None,
                on_checkpoint=keep_going if saving else None, should_stop=stop,
                **options.loop_options(args, in_memory=type(run) is MemoryRun),
            )  # fmt: skip
            backend.synchronize(device)
            # Stopped, the checkpoint is all there is: it must be written. Finished, the model
            # file is what counts; the checkpoint only guards its writing.
            if saving:
                (write_checkpoint if state.stopped_early else keep_going)(state)
    except DivergenceError:
        progress.close(finished=False)
        if root:
            setup.checkpoint.unlink(missing_ok=True)  # the same settings diverge again from it
        raise
    progress.close(finished=not state.stopped_early)
    resume_line = f"deepnet train --resume {quote(Path(setup.name('checkpoint')))}"
    if state.stopped_early:
        signum = stop.signum or signal.SIGINT  # another rank may have been the one signalled
        if root:
            where = (f"saved the run to {setup.name('checkpoint')}; continue it with: "
                     f"{resume_line}" if saving else "nothing saved (--no-checkpoint)")  # fmt: skip
            print(
                f"deepnet: stopped by {signal.Signals(signum).name} after {unit} "
                f"{state.iteration} of {settings.num_iterations}; {where}",
                file=sys.stderr,
            )
        return 128 + signum
    if not root:
        return 0
    extra: dict[str, Any] = {} if start is None else {"resumed_at": start.iteration}
    if comm is not None:
        extra["ranks"] = comm.Get_size()
    if saved and saved[-1] == state.iteration:
        safe = f"the finished run is safe in {setup.name('checkpoint')}: {resume_line}"
    elif saved or start is not None:
        last = saved[-1] if saved else start.iteration
        safe = (f"the run up to {unit} {last} is safe in {setup.name('checkpoint')}: "
                f"{resume_line}")  # fmt: skip
    else:
        safe = "no checkpoint could be written either: free some space and run it again"
    try:
        report = save_run(setup, state, time.perf_counter() - began, extra)
    except KeyboardInterrupt:
        common.error(f"interrupted while saving; {safe}")
        return 130
    except WriteError as exc:
        common.error(f"could not save the model: {exc.with_hint(safe)}")
        return 1
    except OSError as exc:
        common.error(f"could not save the model: {common.os_error_line(exc)}; {safe}")
        return 1
    setup.checkpoint.unlink(missing_ok=True)  # the model holds it all now
    print(report)
    return 0


def plot_options(settings: TrainSettings, run: Any, scores: Any) -> dict[str, Any]:
    """What the cost plot names: model, data, dtype, accuracies; its x axis's unit and end."""
    if run.synthetic:
        data = "synthetic"
    elif isinstance(run, StreamRun):
        data = f"streamed {Path(run.source).name}"
    else:
        data = "course"
    accuracy = {} if scores is None else {
        "train_accuracy": scores["train"].accuracy, "test_accuracy": scores["test"].accuracy,
    }  # fmt: skip
    return {
        "record_every": settings.record_every, "learning_rate": settings.learning_rate,
        "model": f"{settings.model} {'-'.join(map(str, settings.layer_dims))}", "data": data,
        "dtype": settings.dtype, "iterations": settings.num_iterations,
        "x_label": options.unit(settings.batch_size), **accuracy,
    }  # fmt: skip


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
    if state.early_stopping is not None:
        model.training["early_stopping_result"] = state.early_stopping
    save_model(model, setup.out)
    from deepnet.plots import cost_curve_png  # matplotlib drawing, only here

    lines = [] if state.early_stopping is None else [early_stop_line(state)]
    lines.append(f"trained in {seconds:.1f} s; saved the model to {setup.name('out')}")
    try:
        width, height = cost_curve_png(
            model.costs, setup.plot, **plot_options(settings, run, scores)
        )
        lines.append(f"cost curve: {setup.name('plot')} ({width}x{height} pixels)")
    except WriteError as exc:  # the model is saved: the picture is not worth failing for
        common.warn(f"could not draw the cost curve: {exc}")
    if scores is None:
        lines.append(f"accuracy: deepnet evaluate {quote(Path(setup.name('out')))} --data DIR")
    else:
        lines += [f"{split} accuracy: {scores[split].summary()}" for split in ("train", "test")]
    return "\n".join(lines)


def early_stop_line(state: TrainState) -> str:
    """What early stopping did, in one line."""
    info = state.early_stopping or {}
    how = (f"stopped after iteration {state.iteration - 1}" if info.get("stopped")
           else "ran every iteration")  # fmt: skip
    return (f"early stopping: {how}; kept the parameters of iteration {info['best_iteration']} "
            f"(validation accuracy {info['best_validation_accuracy']:.4f})")  # fmt: skip
