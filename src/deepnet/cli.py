"""The ``deepnet`` command: train, evaluate, predict, mislabeled, info (and bench).

Each subcommand is a ``*_command(args) -> int`` function. Errors deepnet raises on purpose
(and OS errors on the user's paths) print one line on stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from deepnet import backend
from deepnet.data import N_FEATURES, Dataset, data_dir, load_cat_data, load_picture, preprocess
from deepnet.errors import DeepnetError, InputError
from deepnet.initialization import INITS
from deepnet.kernels import predict_proba
from deepnet.model_io import Model, load_model, save_model
from deepnet.training import DTYPES, L_layer_model, TrainState, two_layer_model

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
        dims = _parse_layers(args.layers)
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
    if args.print_every < 0 or args.print_every % args.record_every:
        raise InputError(
            f"--print-every must be 0 (never) or a multiple of --record-every "
            f"({args.record_every}), got {args.print_every}"
        )
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


def _parse_layers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise InputError(
            f"--layers takes comma-separated sizes like {N_FEATURES},20,7,5,1, got {text!r}"
        ) from None


class Progress:
    """A tqdm bar showing the current cost, plus the course's "Cost after iteration i" lines."""

    def __init__(self, total: int, print_every: int, enabled: bool | None) -> None:
        if enabled is None:  # by default, a bar only on a terminal
            enabled = sys.stderr.isatty()
        self.print_every = print_every
        self.bar = tqdm(total=total, unit="it", disable=not enabled, dynamic_ncols=True)

    def __call__(self, state: TrainState, cost: float) -> None:
        """The training callback: ``state.iteration - 1`` is the iteration just recorded."""
        done = state.iteration - 1
        self.bar.set_postfix(cost=f"{cost:.6f}", refresh=False)
        self.bar.update(state.iteration - self.bar.n)
        if self.print_every and done % self.print_every == 0:
            tqdm.write(f"Cost after iteration {done}: {cost}", file=sys.stdout)

    def close(self) -> None:
        """Fill the bar and take it off the screen's last line."""
        self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()


def run_training(
    settings: TrainSettings, data: Dataset, device: str, callback: Any = None
) -> tuple[dict[str, Any], list[float]]:
    """The one place the CLI trains: the course's model function for ``settings.model``."""
    model_function = L_layer_model if settings.model == "L-layer" else two_layer_model
    return model_function(
        data.train_x,
        data.train_y,
        settings.layer_dims,
        learning_rate=settings.learning_rate,
        num_iterations=settings.num_iterations,
        device=device,
        dtype=settings.dtype,
        seed=settings.seed,
        init=settings.init,
        batch_size=settings.batch_size,
        record_every=settings.record_every,
        callback=callback,
    )


def train_command(args: argparse.Namespace) -> int:
    """``deepnet train``: train, save the model and its cost curve, report accuracies."""
    settings = train_settings(args)
    device = backend.resolve_device(args.device)
    data = load_cat_data(args.data, synthetic=args.synthetic)
    out = Path(args.out)
    plot = Path(args.plot) if args.plot else out.with_name(out.stem + "-costs.png")
    for path in (out, plot):  # find out now, not after a long run
        _check_writable(path)
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

    progress = Progress(settings.num_iterations, settings.print_every, args.progress)
    start = time.perf_counter()
    try:
        parameters, costs = run_training(settings, data, device, progress)
        backend.synchronize(device)
    finally:
        progress.close()
    seconds = time.perf_counter() - start

    model = Model(
        parameters={k: backend.to_numpy(v) for k, v in parameters.items()},
        layer_dims=settings.layer_dims,
        classes=data.classes,
        dtype=settings.dtype,
        model=settings.model,
        costs=costs,
    )
    scores = {split: _score(model, data, split, device) for split in ("train", "test")}
    model.training = settings.as_metadata() | {
        "device": device,
        "data": data.source,
        "synthetic": data.synthetic,
        "seconds": round(seconds, 3),
        "train_accuracy": scores["train"].accuracy,
        "test_accuracy": scores["test"].accuracy,
    }
    save_model(model, out)
    width, height = _plot_costs(model, plot)
    print(f"trained in {seconds:.1f} s; saved the model to {out}")
    print(f"cost curve: {plot} ({width}x{height} pixels)")
    for split in ("train", "test"):
        print(f"{split} accuracy: {scores[split].summary()}")
    return 0


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
    train.add_argument("--model", choices=list(MODELS), default="L-layer")
    train.add_argument(
        "--layers",
        metavar="SIZES",
        help="layer sizes, comma-separated (default: 12288,20,7,5,1 or 12288,7,1 for two-layer)",
    )
    train.add_argument("--learning-rate", "--lr", type=float, default=0.0075)
    train.add_argument("--iterations", "-n", type=int, default=2500, help="default: 2500")
    train.add_argument("--dtype", choices=DTYPES, default="float64")
    device_option(train)
    train.add_argument(
        "--batch-size", type=int, help="mini-batch size, seeded shuffling (default: full batch)"
    )
    train.add_argument("--seed", type=int, default=1)
    train.add_argument(
        "--init", choices=list(INITS), help="default: lecun for L-layer, small for two-layer"
    )
    data_options(train, "(default: $DEEPNET_DATA, else the synthetic set)")
    train.add_argument(
        "--out", "-o", default=str(DEFAULT_OUT), help=f"model file (default: {DEFAULT_OUT})"
    )
    train.add_argument("--plot", help="cost-curve PNG (default: beside the model, *-costs.png)")
    train.add_argument(
        "--print-every", type=int, default=100, help="print the cost every N iterations (0: never)"
    )
    train.add_argument(
        "--record-every", type=int, default=100, help="record the cost every N iterations"
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
