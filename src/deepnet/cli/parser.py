"""The ``deepnet`` command's argument parser: one subparser per command."""

from __future__ import annotations

import argparse

from deepnet import __version__, backend
from deepnet.cli.course_options import add_course_options
from deepnet.cli.info import info_command, make_data_command
from deepnet.cli.options import DEFAULT_CHECKPOINT_SECONDS, DEFAULT_LENGTH, GRAM
from deepnet.cli.runs import DEFAULT_OUT
from deepnet.cli.train import train_command
from deepnet.cli.use import evaluate_command, mislabeled_command, predict_command
from deepnet.initialization import INITS
from deepnet.install import install_hint
from deepnet.settings import MODELS
from deepnet.spec import HIDDEN_ACTIVATIONS
from deepnet.training import DTYPES


class Given(argparse.Action):
    """Store an option's value and note that the command line gave it (``--resume`` checks)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``deepnet`` command."""
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
        p.add_argument(
            "--backend",
            metavar="LIBRARY[:DEVICE]",
            help="the array library: numpy, cupy, torch or jax, optionally with its device "
            "(torch:cuda, torch:mps, jax:gpu); default: $DEEPNET_BACKEND, else --device decides",
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
    train.add_argument(
        "--model",
        choices=list(MODELS),
        default="L-layer",
        action=Given,
        help="the network: L-layer ([LINEAR -> RELU] x (L-1) -> LINEAR -> SIGMOID) or "
        "two-layer (default: L-layer)",
    )
    train.add_argument(
        "--layers",
        metavar="SIZES",
        action=Given,
        help="layer sizes in units, comma-separated (default: 12288,20,7,5,1, or 12288,7,1 "
        "for two-layer)",
    )
    train.add_argument(
        "--learning-rate",
        "--lr",
        type=float,
        default=0.0075,
        action=Given,
        metavar="RATE",
        help="gradient descent's step size (default: 0.0075)",
    )
    train.add_argument(
        "--iterations",
        "-n",
        type=int,
        default=DEFAULT_LENGTH,
        action=Given,
        metavar="N",
        help="full-batch iterations: gradient-descent steps, each over the whole training set "
        f"(default: {DEFAULT_LENGTH}); with --batch-size, count in --epochs instead",
    )
    train.add_argument(
        "--epochs",
        type=int,
        action=Given,
        metavar="N",
        help="passes over the training set, for mini-batch runs (--batch-size): each epoch is "
        f"ceil(m / batch size) steps (default: {DEFAULT_LENGTH}); at full batch an epoch is "
        "one iteration",
    )
    train.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float64",
        action=Given,
        help="floating-point type of the parameters and data (default: float64)",
    )
    train.add_argument(
        "--activation",
        choices=HIDDEN_ACTIVATIONS,
        default="relu",
        action=Given,
        help="the hidden layers' activation (default: relu)",
    )
    device_option(train)
    add_course_options(train, Given)
    train.add_argument(
        "--batch-size",
        type=int,
        action=Given,
        metavar="N",
        help="mini-batch size in examples, reshuffled every epoch from --seed; the run is then "
        "counted in --epochs (default: full batch, every example in every step)",
    )
    train.add_argument(
        "--seed",
        type=int,
        default=1,
        action=Given,
        help="seed of the initial parameters and of the mini-batch shuffles (default: 1)",
    )
    train.add_argument(
        "--init",
        choices=list(INITS),
        action=Given,
        help="initial parameters (default: lecun, randn / sqrt(n_prev), for L-layer; small, "
        "randn * 0.01, for two-layer)",
    )
    train.add_argument(
        "--gram",
        choices=list(GRAM),
        default="auto",
        help="track the first layer through K = X.T @ X instead of the 12288-wide products "
        "(same result to rounding). auto: on a CPU full-batch run when the iterations left "
        "repay computing K (examples m <= 12288 inputs each, and 2 x first-layer units x "
        "iterations >= m); "
        "on: whenever the run is full batch; off: never (default: auto; in-memory runs only)",
    )
    data_options(train, "(default: $DEEPNET_DATA, else the synthetic set)")
    train.add_argument(
        "--stream",
        metavar="FILE",
        help="train from a course-layout HDF5 file read batch by batch (it need not fit in "
        "memory; make one with deepnet make-data) (default: none, the data in memory)",
    )
    train.add_argument(
        "--out",
        "-o",
        default=str(DEFAULT_OUT),
        action=Given,
        metavar="PATH",
        help=f"model file (default: {DEFAULT_OUT})",
    )
    train.add_argument(
        "--plot",
        action=Given,
        metavar="PATH",
        help="cost-curve PNG (default: beside the model, NAME-costs.png)",
    )
    train.add_argument(
        "--print-every",
        type=int,
        default=100,
        action=Given,
        metavar="N",
        help="print the cost every N iterations (epochs with --batch-size); 0: never; a "
        "multiple of --record-every (default: 100)",
    )
    train.add_argument(
        "--record-every",
        type=int,
        default=100,
        action=Given,
        metavar="N",
        help="record the cost every N iterations (epochs with --batch-size), and at the last "
        "(default: 100)",
    )
    train.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="where the run is saved while it trains, and on Ctrl-C or SIGTERM (default: "
        "beside the model, NAME.ckpt.npz); removed once the model is saved",
    )
    train.add_argument(
        "--checkpoint-seconds",
        type=float,
        default=DEFAULT_CHECKPOINT_SECONDS,
        action=Given,
        metavar="S",
        help="save the checkpoint once S seconds of training have passed since the last one "
        f"(default: {DEFAULT_CHECKPOINT_SECONDS:g} s); 0: not by time. The run is also saved "
        "when it ends and on Ctrl-C or SIGTERM",
    )
    train.add_argument(
        "--checkpoint-every",
        type=int,
        action=Given,
        metavar="N",
        help="also save the checkpoint every N iterations (epochs with --batch-size) "
        "(default: not by count)",
    )
    train.add_argument(
        "--no-checkpoint",
        action="store_true",
        help="write no checkpoint at all: a stopped run is lost (default: checkpoints on)",
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
        f"(needs {install_hint('mpi')}); the costs are the single-process ones",
    )
    train.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar of iterations (epochs with --batch-size) done, their rate "
        "and the time left (default: only on a terminal)",
    )
    train.set_defaults(handler=train_command)

    make = commands.add_parser("make-data", help="write a large synthetic file for --stream")
    make.add_argument("path", metavar="PATH")
    make.add_argument("--n", type=int, default=200_000, help="number of images (default: 200000)")
    make.add_argument("--seed", type=int, default=0, help="seed of the drawings (default: 0)")
    make.add_argument(
        "--prefix", default="train", help="dataset names PREFIX_set_x/y (default: train)"
    )
    make.set_defaults(handler=make_data_command)

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
    mislabeled.add_argument(
        "--out",
        "-o",
        metavar="PATH",
        help="PNG path (default: beside the model, NAME-mislabeled.png)",
    )
    mislabeled.add_argument("--columns", type=int, default=5, help="pictures per row (default: 5)")
    data_options(mislabeled, "(default: the data the model was trained on)")
    device_option(mislabeled)
    mislabeled.set_defaults(handler=mislabeled_command)

    info = commands.add_parser(
        "info", help="versions, device, GPU, BLAS, MPI, extras and where the data are"
    )
    device_option(info)
    info.set_defaults(handler=info_command)

    commands.add_parser(
        "bench", help="benchmarks (see deepnet bench --help)", add_help=False
    ).add_argument("rest", nargs=argparse.REMAINDER)
    return parser
