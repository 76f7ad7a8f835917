"""The ``deepnet`` command: train, evaluate, predict, mislabeled, info (and bench).

Each subcommand is a ``*_command(args) -> int`` function. Errors deepnet raises on purpose
(and OS errors on the user's paths) print one line on stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shlex
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from deepnet import backend
from deepnet.checkpoint import Checkpoint, fingerprint, load_checkpoint, save_checkpoint
from deepnet.data import N_FEATURES, Dataset, data_dir, load_cat_data, load_picture, preprocess
from deepnet.errors import DeepnetError, DivergenceError, InputError, ModelFileError
from deepnet.initialization import INITS, check_layer_dims
from deepnet.kernels import predict_proba
from deepnet.model_io import Model, load_model, save_model
from deepnet.training import DTYPES, TrainState, train
from deepnet.validation import check_learning_rate

MODELS = {
    # name: (default layer dims, default initialisation), as in the course's application notebook
    "L-layer": ([N_FEATURES, 20, 7, 5, 1], "lecun"),
    "two-layer": ([N_FEATURES, 7, 1], "small"),
}
DEFAULT_OUT = Path("runs") / "model.npz"


# ---------------------------------------------------------------------------------------------
# train


@dataclass
class TrainSettings:
    """The validated settings of one training run (what ``deepnet train`` was asked to do)."""

    model: str
    layer_dims: list[int]
    learning_rate: float
    num_iterations: int
    dtype: str
    seed: int
    init: str
    batch_size: int | None
    record_every: int
    print_every: int

    def as_metadata(self) -> dict[str, Any]:
        """The settings as stored in the model file."""
        return {
            "learning_rate": self.learning_rate,
            "num_iterations": self.num_iterations,
            "seed": self.seed,
            "init": self.init,
            "batch_size": self.batch_size,
            "record_every": self.record_every,
        }


def train_settings(args: argparse.Namespace) -> TrainSettings:
    """Check ``deepnet train``'s options and fill in the model's defaults."""
    dims, init = MODELS[args.model]
    if args.layers is not None:
        dims = check_layer_dims(_parse_layers(args.layers))
    check_learning_rate(args.learning_rate)
    if dims[0] != N_FEATURES or dims[-1] != 1:
        raise InputError(
            f"--layers must start with {N_FEATURES} (64x64x3 inputs per picture) and end with 1 "
            f"(one sigmoid output), got {','.join(map(str, dims))}"
        )
    if args.model == "two-layer" and len(dims) != 3:
        raise InputError(f"the two-layer model takes --layers {N_FEATURES},N,1, got {dims}")
    for name in ("iterations", "record_every"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError("--batch-size must be at least 1 (leave it out for full batch)")
    if not 0 <= args.seed < 2**32:  # what NumPy's RandomState takes
        raise InputError(f"--seed must be an integer from 0 to 2**32 - 1, got {args.seed}")
    _check_print_every(args.print_every, args.record_every)
    return TrainSettings(
        model=args.model,
        layer_dims=dims,
        learning_rate=args.learning_rate,
        num_iterations=args.iterations,
        dtype=args.dtype,
        seed=args.seed,
        init=args.init or init,
        batch_size=args.batch_size,
        record_every=args.record_every,
        print_every=args.print_every,
    )


def _check_print_every(print_every: int, record_every: int) -> None:
    if print_every < 0 or print_every % record_every:
        raise InputError(
            f"--print-every must be 0 (never) or a multiple of --record-every "
            f"({record_every}), got {print_every}"
        )


def _parse_layers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise InputError(
            f"--layers takes comma-separated sizes like {N_FEATURES},20,7,5,1, got {text!r}"
        ) from None


class Progress:
    """A tqdm bar showing the current cost, plus the course's "Cost after iteration i" lines."""

    def __init__(
        self, total: int, print_every: int, enabled: bool | None, initial: int = 0
    ) -> None:
        if enabled is None:  # by default, a bar only on a terminal
            enabled = sys.stderr.isatty()
        self.print_every = print_every
        self.bar = tqdm(
            total=total, initial=initial, unit="it", disable=not enabled, dynamic_ncols=True
        )

    def __call__(self, state: TrainState, cost: float) -> None:
        """The training callback: ``state.iteration - 1`` is the iteration just recorded."""
        done = state.iteration - 1
        self.bar.set_postfix(cost=f"{cost:.6f}", refresh=False)
        self.bar.update(state.iteration - self.bar.n)
        if self.print_every and done % self.print_every == 0:
            tqdm.write(f"Cost after iteration {done}: {cost}", file=sys.stdout)

    def close(self, finished: bool = True) -> None:
        """Fill the bar (unless the run stopped early) and take it off the screen's last line."""
        if finished:
            self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()


def run_training(
    settings: TrainSettings,
    data: Dataset,
    device: str,
    callback: Any = None,
    *,
    start: TrainState | None = None,
    checkpoint_every: int | None = None,
    on_checkpoint: Any = None,
    should_stop: Any = None,
) -> TrainState:
    """The one place the CLI trains: the course's model for ``settings``, from ``start`` if given.

    It is :func:`deepnet.training.train`, the body of ``L_layer_model`` /
    ``two_layer_model`` (a test holds them equal); with ``start``, a run continues from a
    checkpoint's host parameters, costs and iteration. The hooks go to ``fit``.
    """
    return train(
        data.train_x, data.train_y, settings.layer_dims, init=settings.init, seed=settings.seed,
        learning_rate=settings.learning_rate, num_iterations=settings.num_iterations,
        device=device, dtype=settings.dtype, start=start, batch_size=settings.batch_size,
        record_every=settings.record_every, callback=callback, checkpoint_every=checkpoint_every,
        on_checkpoint=on_checkpoint, should_stop=should_stop,
    )  # fmt: skip


class StopRequest:
    """While training, SIGINT (Ctrl-C) and SIGTERM ask the loop to stop after this iteration.

    A context manager: it installs its handlers on entry and puts the previous ones back on
    exit. Called, it says whether a stop was asked for; ``signum`` says by which signal.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # only it may set handlers
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum

    def __call__(self) -> bool:
        return self.signum is not None

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def default_checkpoint(out: Path) -> Path:
    """Where a run's checkpoint goes by default: beside its model, ``NAME.ckpt.npz``."""
    return out.with_name(out.stem + ".ckpt.npz")


@dataclass
class Resume:
    """A checkpoint to continue, with its settings checked as if typed on the command line."""

    path: Path
    checkpoint: Checkpoint
    settings: TrainSettings

    @property
    def state(self) -> TrainState:
        """Where the run stopped: host parameters, costs so far, next iteration."""
        checkpoint = self.checkpoint
        return TrainState(
            checkpoint.parameters, checkpoint.costs, checkpoint.iteration, resume=checkpoint.resume
        )


# The options that decide a run's result, with the setting each one sets: a resumed run
# takes all of them from its checkpoint, and refuses a command line that asks otherwise.
SETTING_OPTIONS = {
    "model": ("--model", "model"),
    "layers": ("--layers", "layer_dims"),
    "learning_rate": ("--learning-rate", "learning_rate"),
    "iterations": ("--iterations", "num_iterations"),
    "dtype": ("--dtype", "dtype"),
    "batch_size": ("--batch-size", "batch_size"),
    "seed": ("--seed", "seed"),
    "init": ("--init", "init"),
    "record_every": ("--record-every", "record_every"),
}
_SETTING_TYPES = {
    "model": str, "layer_dims": list, "learning_rate": (int, float), "num_iterations": int,
    "dtype": str, "seed": int, "init": str, "batch_size": (int, type(None)),
    "record_every": int, "print_every": int,
}  # fmt: skip


def resume_point(args: argparse.Namespace) -> Resume:
    """The checkpoint ``--resume`` names (default: ``--checkpoint``'s, else beside ``--out``)."""
    if args.resume:
        path = Path(args.resume)
    else:
        path = Path(args.checkpoint) if args.checkpoint else default_checkpoint(Path(args.out))
    if not path.is_file():
        raise InputError(
            f"no checkpoint at {path} to resume; give its path: deepnet train --resume PATH"
        )
    checkpoint = load_checkpoint(path)
    settings = _checkpoint_settings(checkpoint, path)
    for dest in sorted(getattr(args, "given", set()) & set(SETTING_OPTIONS)):
        flag, name = SETTING_OPTIONS[dest]
        asked = _parse_layers(args.layers) if dest == "layers" else getattr(args, dest)
        stored = getattr(settings, name)
        if asked != stored:
            raise InputError(
                f"{flag} {_option_text(asked)} conflicts with the checkpoint's "
                f"{_option_text(stored)}: a resumed run keeps the settings it started with "
                f"({path}); leave {flag} out, or start a new run without --resume"
            )
    return Resume(path, checkpoint, settings)


def _option_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def _checkpoint_settings(checkpoint: Checkpoint, path: Path) -> TrainSettings:
    """The stored settings, through the same checks as ``deepnet train``'s options."""
    stored = checkpoint.settings
    for name, kind in _SETTING_TYPES.items():
        value = stored.get(name, ...)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ModelFileError(f"{path}: the checkpoint's {name} setting is missing or invalid")
    for name, choices in (("model", MODELS), ("dtype", DTYPES), ("init", INITS)):
        if stored[name] not in choices:
            raise ModelFileError(f"{path}: the checkpoint's {name} {stored[name]!r} is unknown")
    options = argparse.Namespace(
        model=stored["model"],
        layers=",".join(map(str, stored["layer_dims"])),
        learning_rate=stored["learning_rate"],
        iterations=stored["num_iterations"],
        dtype=stored["dtype"],
        seed=stored["seed"],
        init=stored["init"],
        batch_size=stored["batch_size"],
        record_every=stored["record_every"],
        print_every=stored["print_every"],
    )
    try:
        settings = train_settings(options)
    except InputError as exc:
        raise ModelFileError(
            f"{path}: the checkpoint holds settings deepnet refuses: {exc}"
        ) from None
    if (settings.layer_dims, settings.dtype, settings.model) != (
        checkpoint.layer_dims,
        checkpoint.dtype,
        checkpoint.model,
    ):
        raise ModelFileError(f"{path}: the checkpoint's settings do not match its parameters")
    return settings


def _resume_data(args: argparse.Namespace, resume: Resume) -> Dataset:
    """The data the checkpoint was trained on (or the one asked for), checked to be the same."""
    recorded = resume.checkpoint.data
    if args.data is not None or args.synthetic:
        data = load_cat_data(args.data, synthetic=args.synthetic)
    elif recorded.get("synthetic") is True:
        data = load_cat_data(synthetic=True)
    elif isinstance(recorded.get("folder"), str):
        data = load_cat_data(recorded["folder"])
    else:
        raise InputError(f"{resume.path} does not say where its data is: pass --data DIR")
    if fingerprint(data.train_x, data.train_y) != recorded["fingerprint"]:
        raise InputError(
            f"{resume.path} was trained on other data ({recorded.get('source', 'unknown')}) "
            f"than {data.source}: resume it on the same data (--data DIR or --synthetic)"
        )
    return data


def _train_paths(args: argparse.Namespace, resume: Resume | None) -> tuple[Path, Path, Path]:
    """The model, cost-curve and checkpoint paths; a resumed run keeps its own unless told."""
    given = getattr(args, "given", set())
    stored = resume.checkpoint.outputs if resume is not None else {}
    out = Path(args.out) if "out" in given or "out" not in stored else Path(stored["out"])
    if args.plot:
        plot = Path(args.plot)
    elif "out" in given or "plot" not in stored:
        plot = out.with_name(out.stem + "-costs.png")
    else:
        plot = Path(stored["plot"])
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
    else:
        checkpoint = resume.path if resume is not None else default_checkpoint(out)
    return out, plot, checkpoint


def train_command(args: argparse.Namespace) -> int:
    """``deepnet train``: train (or continue) a run, save the model and its cost curve, report.

    A checkpoint is written every ``--checkpoint-every`` iterations and when SIGINT or
    SIGTERM stops the run (exit status 128 + the signal's number); ``--resume`` continues
    from it to the same final parameters as an uninterrupted run. It is removed once the
    model is saved.
    """
    if args.distributed:
        return distributed_train_command(args)
    if args.checkpoint_every < 1:
        raise InputError(f"--checkpoint-every must be at least 1, got {args.checkpoint_every}")
    resume = resume_point(args) if args.resume is not None else None
    settings = resume.settings if resume is not None else train_settings(args)
    if resume is not None and "print_every" in getattr(args, "given", set()):
        _check_print_every(args.print_every, settings.record_every)  # display only: allowed
        settings = replace(settings, print_every=args.print_every)
    device = backend.resolve_device(args.device)
    if resume is not None:
        data = _resume_data(args, resume)
    else:
        data = load_cat_data(args.data, synthetic=args.synthetic)
    out, plot, checkpoint_path = _train_paths(args, resume)
    for path in (out, plot, checkpoint_path):  # find out now, not after a long run
        _check_writable(path)
    if resume is None and checkpoint_path.exists():
        raise InputError(
            f"{checkpoint_path} holds an unfinished run: continue it with deepnet train --resume "
            f"{_quote(checkpoint_path)}, or delete it (or pass --checkpoint) to start over"
        )
    record = {
        "source": data.source,
        "synthetic": data.synthetic,
        "folder": None if data.folder is None else str(data.folder.resolve()),
        "fingerprint": fingerprint(data.train_x, data.train_y),
    }
    outputs = {"out": str(out.resolve()), "plot": str(plot.resolve())}
    print(f"data: {data.source}")
    if data.synthetic:
        print("      (set DEEPNET_DATA or pass --data to train on the course's cat pictures)")
    print(f"device: {_device_line(device)}")
    dims = "-".join(map(str, settings.layer_dims))
    print(
        f"model: {settings.model} {dims}, init {settings.init}, {settings.dtype}, "
        f"learning rate {settings.learning_rate}, {settings.num_iterations} iterations, "
        f"{'full batch' if settings.batch_size is None else f'batch {settings.batch_size}'}"
    )
    start = resume.state if resume is not None else None
    if start is not None:
        print(f"resuming {resume.path} at iteration {start.iteration}")

    def write_checkpoint(state: TrainState) -> None:
        host = {k: backend.to_numpy(v) for k, v in state.parameters.items()}
        if not all(np.isfinite(v).all() for v in host.values()):
            return  # diverging: keep the last good checkpoint; fit raises at the next record
        checkpoint = Checkpoint(
            parameters=host,
            costs=list(state.costs),
            iteration=state.iteration,
            settings=asdict(settings),
            data=record,
            outputs=outputs,
            layer_dims=settings.layer_dims,
            dtype=settings.dtype,
            model=settings.model,
            classes=data.classes,
            resume=state.resume,
        )
        save_checkpoint(checkpoint, checkpoint_path)

    progress = Progress(
        settings.num_iterations,
        settings.print_every,
        args.progress,
        initial=0 if start is None else start.iteration,
    )
    began = time.perf_counter()
    stop = StopRequest()
    try:
        with stop:
            state = run_training(
                settings, data, device, progress, start=start,
                checkpoint_every=args.checkpoint_every, on_checkpoint=write_checkpoint,
                should_stop=stop,
            )  # fmt: skip
            backend.synchronize(device)
            write_checkpoint(state)  # finished or stopped, nothing is lost from here on
    except DivergenceError:
        progress.close(finished=False)
        checkpoint_path.unlink(missing_ok=True)  # the same settings diverge again from it
        raise
    progress.close(finished=not state.stopped_early)
    seconds = time.perf_counter() - began
    resume_line = f"deepnet train --resume {_quote(checkpoint_path)}"
    if state.stopped_early:
        name = signal.Signals(stop.signum).name
        print(
            f"deepnet: stopped by {name} after iteration {state.iteration} of "
            f"{settings.num_iterations}; saved the run to {checkpoint_path}; continue it with: "
            f"{resume_line}",
            file=sys.stderr,
        )
        return 128 + stop.signum

    extra = {} if start is None else {"resumed_at": start.iteration}
    try:
        report = _save_run(settings, data, device, state, out, plot, seconds, extra)
    except KeyboardInterrupt:
        _error(f"interrupted while saving; the finished run is in {checkpoint_path}: {resume_line}")
        return 130
    checkpoint_path.unlink(missing_ok=True)  # the model holds it all now
    print(report)
    return 0


def _save_run(
    settings: TrainSettings,
    data: Dataset,
    device: str,
    state: TrainState,
    out: Path,
    plot: Path,
    seconds: float,
    extra: dict[str, Any],
) -> str:
    """Score a finished run, save the model and its cost curve; returns the closing report."""
    model = Model(
        parameters={k: backend.to_numpy(v) for k, v in state.parameters.items()},
        layer_dims=settings.layer_dims,
        classes=data.classes,
        dtype=settings.dtype,
        model=settings.model,
        costs=state.costs,
    )
    scores = {split: _score(model, data, split, device) for split in ("train", "test")}
    model.training = settings.as_metadata() | {
        "device": device,
        "data": data.source,
        "synthetic": data.synthetic,
        "seconds": round(seconds, 3),
        "train_accuracy": scores["train"].accuracy,
        "test_accuracy": scores["test"].accuracy,
        **extra,
    }
    save_model(model, out)
    width, height = _plot_costs(model, plot)
    lines = [
        f"trained in {seconds:.1f} s; saved the model to {out}",
        f"cost curve: {plot} ({width}x{height} pixels)",
    ]
    lines += [f"{split} accuracy: {scores[split].summary()}" for split in ("train", "test")]
    return "\n".join(lines)


def distributed_train_command(args: argparse.Namespace) -> int:
    """``mpiexec -n N deepnet train --distributed``: full batch, data-parallel over MPI ranks.

    Every rank loads the data and keeps its shard; gradients and the cost are summed with
    Allreduce, so the cost history is the single-process one. Rank 0 alone prints, saves
    the model and its cost curve, and reports the accuracies.
    """
    from deepnet import distributed  # noqa: PLC0415  (needs mpi4py, an optional extra)

    if args.resume is not None:
        raise InputError("--resume does not work with --distributed; run it without --resume")
    settings = train_settings(args)
    if settings.batch_size is not None:
        raise InputError("--distributed trains full batch; leave out --batch-size")
    comm = distributed.world()
    root = distributed.is_root(comm)
    data = load_cat_data(args.data, synthetic=args.synthetic)
    out, plot, _ = _train_paths(args, None)
    if root:
        for path in (out, plot):
            _check_writable(path)
        device = backend.resolve_device(args.device)
        print(f"data: {data.source}")
        print(f"device: {_device_line(device)}; {comm.Get_size()} MPI ranks, full batch")
    progress = Progress(
        settings.num_iterations, settings.print_every, args.progress if root else False
    )
    began = time.perf_counter()
    try:
        parameters, costs = distributed.train_distributed(
            (data.train_x, data.train_y), settings.layer_dims, comm=comm,
            learning_rate=settings.learning_rate, num_iterations=settings.num_iterations,
            init=settings.init, seed=settings.seed, device=args.device, dtype=settings.dtype,
            record_every=settings.record_every, callback=progress if root else None,
        )  # fmt: skip
    finally:
        progress.close()
    if not root:
        return 0
    state = TrainState(parameters, costs, settings.num_iterations)
    seconds = time.perf_counter() - began
    print(_save_run(settings, data, device, state, out, plot, seconds, {"ranks": comm.Get_size()}))
    return 0


def _quote(path: Path) -> str:
    return shlex.quote(str(path))


def _check_writable(path: Path) -> None:
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name for the output")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the nearest folder that exists is where one gets created
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: {folder} is not writable")


def _plot_costs(model: Model, path: Path) -> tuple[int, int]:
    from deepnet.plots import cost_curve_png  # noqa: PLC0415  (Pillow drawing, only here)

    return cost_curve_png(
        model.costs,
        path,
        record_every=model.training.get("record_every", 100),
        learning_rate=model.training.get("learning_rate"),
    )


# ---------------------------------------------------------------------------------------------
# evaluate, predict, mislabeled


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
    proba = predict_proba(X_device, model.parameters_on(device))
    return backend.to_numpy(proba).reshape(-1)


def _score(model: Model, data: Dataset, split: str, device: str | None) -> Score:
    X, Y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
    return Score(probabilities(model, X, device), Y.reshape(-1).astype(np.int64))


def _data_for_model(args: argparse.Namespace, model: Model) -> Dataset:
    """The data a model is checked on: what it was trained on unless told otherwise."""
    if args.synthetic or args.data is not None:
        return load_cat_data(args.data, synthetic=args.synthetic)
    if model.training.get("synthetic", False):
        return load_cat_data(synthetic=True)
    if data_dir() is None:
        raise InputError(
            "this model was trained on the course data: set DEEPNET_DATA or pass --data DIR "
            "(or --synthetic to use the synthetic set)"
        )
    return load_cat_data()


def _describe(model: Model, path: str) -> str:
    dims = "-".join(map(str, model.layer_dims))
    trained_on = "synthetic data" if model.training.get("synthetic") else "the course data"
    return f"{path} ({model.model} {dims}, {model.dtype}, trained on {trained_on})"


def evaluate_command(args: argparse.Namespace) -> int:
    """``deepnet evaluate MODEL``: train and test accuracy with confusion counts."""
    model = load_model(args.model)
    device = backend.resolve_device(args.device)
    data = _data_for_model(args, model)
    print(f"model: {_describe(model, args.model)}")
    print(f"data: {data.source}")
    print(f"device: {_device_line(device)}")
    corner = "true \\ predicted"
    first, width = len(corner) + 2, max(len(n) for n in model.classes) + 3
    for split in ("train", "test"):
        score = _score(model, data, split, device)
        print(f"{split} accuracy: {score.summary()}")
        print(f"  {corner:<{first}}" + "".join(f"{n:>{width}}" for n in model.classes))
        for name, row in zip(model.classes, score.confusion(), strict=True):
            print(f"  {name:<{first}}" + "".join(f"{c:>{width}}" for c in row))
    return 0


def predict_command(args: argparse.Namespace) -> int:
    """``deepnet predict MODEL IMAGE...``: the class and its probability for each picture."""
    model = load_model(args.model)
    device = backend.resolve_device(args.device)
    failed = 0
    pictures, names = [], []
    for path in args.images:
        try:
            pictures.append(load_picture(path))
            names.append(path)
        except DeepnetError as exc:
            _error(str(exc))
            failed += 1
    if pictures:
        proba = probabilities(model, preprocess(np.stack(pictures)), device)
        for name, p in zip(names, proba, strict=True):
            label = model.classes[int(p > 0.5)]
            print(f"{name}: {label} (P({model.classes[1]}) = {p:.4f})")
    return 1 if failed else 0


def mislabeled_command(args: argparse.Namespace) -> int:
    """``deepnet mislabeled MODEL``: a PNG gallery of the test pictures the model gets wrong."""
    from deepnet.plots import gallery_png  # noqa: PLC0415

    model = load_model(args.model)
    device = backend.resolve_device(args.device)
    data = _data_for_model(args, model)
    score = _score(model, data, "test", device)
    wrong = np.flatnonzero(score.predictions != score.labels)
    out = (
        Path(args.out)
        if args.out
        else Path(args.model).with_name(Path(args.model).stem + "-mislabeled.png")
    )
    width, height = gallery_png(
        data.test_images[wrong],
        score.predictions[wrong],
        score.labels[wrong],
        model.classes,
        out,
        probabilities=score.probabilities[wrong],
        columns=args.columns,
        title=f"{len(wrong)} of {score.labels.size} test pictures mislabeled",
    )
    print(f"data: {data.source}")
    print(f"{len(wrong)} of {score.labels.size} test pictures mislabeled")
    print(f"gallery: {out} ({width}x{height} pixels)")
    return 0


# ---------------------------------------------------------------------------------------------
# info and bench


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _device_line(device: str) -> str:
    if device == "cuda":
        return f"cuda ({backend.gpu_description()})"
    return "cpu (NumPy)"


def info_command(args: argparse.Namespace) -> int:
    """``deepnet info``: versions, the resolved device, the GPU, where the data comes from."""
    from deepnet import __version__  # noqa: PLC0415

    print(f"deepnet {__version__}")
    print(f"python {platform.python_version()} ({platform.system()} {platform.machine()})")
    libraries = ["numpy", "h5py", "pillow", "tqdm", "array-api-compat"]
    print("libraries: " + ", ".join(f"{n} {_version(n) or 'missing'}" for n in libraries))
    cupy = [f"{n} {v}" for n in ("cupy-cuda12x", "cupy-cuda13x", "cupy") if (v := _version(n))]
    print(f"cupy: {', '.join(cupy) or 'not installed'}")
    print(f"gpu: {backend.gpu_description() or 'none usable'}")
    root = data_dir()
    if root is None:
        print("data: DEEPNET_DATA is not set; `deepnet train` uses the synthetic set")
    else:
        print(f"data: {root} (DEEPNET_DATA)")
    try:
        device = backend.resolve_device(args.device)
    except DeepnetError as exc:
        print("device: unusable")
        _error(str(exc))
        return 1
    print(f"device: {_device_line(device)}")
    return 0


def bench_command(argv: Sequence[str]) -> int:
    """``deepnet bench ...``: hand the arguments to :mod:`deepnet.bench`."""
    try:
        from deepnet.bench import main as bench_main  # noqa: PLC0415  (optional module)
    except ModuleNotFoundError as exc:
        if exc.name != "deepnet.bench":
            raise
        _error("`deepnet bench` is not available in this installation (no deepnet.bench)")
        return 1
    return bench_main(list(argv))


# ---------------------------------------------------------------------------------------------
# the parser and main


class Given(argparse.Action):
    """Store an option's value and note that the command line gave it (``--resume`` checks)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``deepnet`` command."""
    from deepnet import __version__  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="deepnet",
        description="Train and use the deep learning course's cat / non-cat network.",
    )
    parser.add_argument("--version", action="version", version=f"deepnet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def device_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--device",
            choices=backend.DEVICES,
            help="cpu (NumPy) or cuda (CuPy); default: $DEEPNET_DEVICE, else cpu",
        )

    def data_options(p: argparse.ArgumentParser, default: str) -> None:
        group = p.add_mutually_exclusive_group()
        group.add_argument(
            "--data",
            metavar="DIR",
            help="folder holding train_catvnoncat.h5 and test_catvnoncat.h5 " + default,
        )
        group.add_argument(
            "--synthetic", action="store_true", help="use deepnet's synthetic cat/non-cat set"
        )

    train = commands.add_parser("train", help="train a model, save it and its cost curve")
    train.add_argument("--model", choices=list(MODELS), default="L-layer", action=Given)
    train.add_argument(
        "--layers",
        metavar="SIZES",
        action=Given,
        help="layer sizes, comma-separated (default: 12288,20,7,5,1 or 12288,7,1 for two-layer)",
    )
    train.add_argument("--learning-rate", "--lr", type=float, default=0.0075, action=Given)
    train.add_argument(
        "--iterations", "-n", type=int, default=2500, action=Given, help="default: 2500"
    )
    train.add_argument("--dtype", choices=DTYPES, default="float64", action=Given)
    device_option(train)
    train.add_argument(
        "--batch-size",
        type=int,
        action=Given,
        help="mini-batch size, seeded shuffling (default: full batch)",
    )
    train.add_argument("--seed", type=int, default=1, action=Given)
    train.add_argument(
        "--init",
        choices=list(INITS),
        action=Given,
        help="default: lecun for L-layer, small for two-layer",
    )
    data_options(train, "(default: $DEEPNET_DATA, else the synthetic set)")
    train.add_argument(
        "--out",
        "-o",
        default=str(DEFAULT_OUT),
        action=Given,
        help=f"model file (default: {DEFAULT_OUT})",
    )
    train.add_argument(
        "--plot", action=Given, help="cost-curve PNG (default: beside the model, *-costs.png)"
    )
    train.add_argument(
        "--print-every",
        type=int,
        default=100,
        action=Given,
        help="print the cost every N iterations (0: never)",
    )
    train.add_argument(
        "--record-every",
        type=int,
        default=100,
        action=Given,
        help="record the cost every N iterations",
    )
    train.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="where the run is saved while it trains, and on Ctrl-C or SIGTERM (default: "
        "beside the model, *.ckpt.npz); removed once the model is saved",
    )
    train.add_argument(
        "--checkpoint-every",
        type=int,
        default=100,
        metavar="N",
        help="save the checkpoint every N iterations (default: 100)",
    )
    train.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="CHECKPOINT",
        help="continue an interrupted run, with its settings and data, to the result it would "
        "have had (default: the checkpoint --checkpoint or --out points to)",
    )
    train.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel full batch over MPI ranks: mpiexec -n N deepnet train --distributed "
        "(needs pip install -e '.[mpi]'); the costs are the single-process ones",
    )
    train.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: only on a terminal)",
    )
    train.set_defaults(handler=train_command)

    evaluate = commands.add_parser("evaluate", help="accuracy and confusion counts of a model")
    evaluate.add_argument("model", metavar="MODEL", help="a model file written by deepnet train")
    data_options(evaluate, "(default: the data the model was trained on)")
    device_option(evaluate)
    evaluate.set_defaults(handler=evaluate_command)

    predict = commands.add_parser("predict", help="classify your own pictures")
    predict.add_argument("model", metavar="MODEL")
    predict.add_argument("images", metavar="IMAGE", nargs="+", help="any picture Pillow reads")
    device_option(predict)
    predict.set_defaults(handler=predict_command)

    mislabeled = commands.add_parser("mislabeled", help="a PNG of the test pictures it gets wrong")
    mislabeled.add_argument("model", metavar="MODEL")
    mislabeled.add_argument("--out", "-o", help="PNG path (default: beside the model)")
    mislabeled.add_argument("--columns", type=int, default=5, help="pictures per row")
    data_options(mislabeled, "(default: the data the model was trained on)")
    device_option(mislabeled)
    mislabeled.set_defaults(handler=mislabeled_command)

    info = commands.add_parser("info", help="versions, device and GPU")
    device_option(info)
    info.set_defaults(handler=info_command)

    commands.add_parser(
        "bench", help="benchmarks (see deepnet bench --help)", add_help=False
    ).add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _error(message: str) -> None:
    print(f"deepnet: error: {message}", file=sys.stderr)


def _os_error_line(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``deepnet`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "bench":  # everything after "bench" belongs to deepnet.bench
            return bench_command(argv[1:])
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except DeepnetError as exc:
        _error(str(exc))
    except OSError as exc:
        _error(_os_error_line(exc))
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
