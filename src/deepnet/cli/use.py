"""``deepnet evaluate``, ``predict`` and ``mislabeled``: using a trained model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from deepnet import backend
from deepnet.cli.common import data_files, device_line, error
from deepnet.data import ENV_VAR, Dataset, data_dir, load_cat_data, load_picture, preprocess
from deepnet.errors import DeepnetError, InputError
from deepnet.model_io import Model, load_model
from deepnet.paths import check_outputs, safe_text
from deepnet.scoring import probabilities, score_split


def _data_choice(args: argparse.Namespace, model: Model) -> tuple[str | None, bool]:
    """The data a model is checked on (folder, synthetic): what it was trained on unless told."""
    if args.synthetic or args.data is not None:
        return args.data, args.synthetic
    if model.training.get("synthetic", False):
        return None, True
    if data_dir() is None:
        raise InputError(
            "this model was trained on the course data: set DEEPNET_DATA or pass --data DIR "
            "(or --synthetic to use the synthetic set)"
        )
    return None, False


def _data_for_model(args: argparse.Namespace, model: Model) -> Dataset:
    """The data a model is checked on, its files checked to be readable regular files."""
    folder, synthetic = _data_choice(args, model)
    data_files(folder, synthetic, "--data" if args.data is not None else ENV_VAR)
    return load_cat_data(folder, synthetic=synthetic)


def _describe(model: Model, path: str) -> str:
    dims = "-".join(map(str, model.layer_dims))
    trained_on = "synthetic data" if model.training.get("synthetic") else "the course data"
    return f"{safe_text(path)} ({model.model} {dims}, {model.dtype}, trained on {trained_on})"


def evaluate_command(args: argparse.Namespace) -> int:
    """``deepnet evaluate MODEL``: train and test accuracy with confusion counts."""
    model = load_model(args.model)
    device = backend.cli_device(args.backend, args.device, model.dtype)
    data = _data_for_model(args, model)
    print(f"model: {_describe(model, args.model)}")
    print(f"data: {safe_text(data.source)}")
    print(f"device: {device_line(device)}")
    corner = "true \\ predicted"
    classes = [safe_text(n) for n in model.classes]  # never a terminal escape code
    first, width = len(corner) + 2, max(len(n) for n in classes) + 3
    for split in ("train", "test"):
        score = score_split(model, data, split, device)
        print(f"{split} accuracy: {score.summary()}")
        print(f"  {corner:<{first}}" + "".join(f"{n:>{width}}" for n in classes))
        for name, row in zip(classes, score.confusion(), strict=True):
            print(f"  {name:<{first}}" + "".join(f"{c:>{width}}" for c in row))
    return 0


def predict_command(args: argparse.Namespace) -> int:
    """``deepnet predict MODEL IMAGE...``: the class and its probability for each picture."""
    model = load_model(args.model)
    device = backend.cli_device(args.backend, args.device, model.dtype)
    failed = 0
    pictures, names = [], []
    for path in args.images:
        try:
            pictures.append(load_picture(path))
            names.append(path)
        except DeepnetError as exc:
            error(str(exc))
            failed += 1
    if pictures and model.training.get("synthetic", False):
        synthetic_warning(args.model)
    if pictures:
        proba = probabilities(model, preprocess(np.stack(pictures)), device)
        classes = [safe_text(n) for n in model.classes]  # never a terminal escape code
        for name, p in zip(names, proba, strict=True):
            print(f"{safe_text(name)}: {classes[int(p > 0.5)]} (P({classes[1]}) = {p:.4f})")
    return 2 if failed else 0  # pictures it could not read are input errors


def synthetic_warning(path: str) -> None:
    """Say once, on stderr, that a model of the synthetic drawings knows nothing of photos."""
    print(
        f"deepnet: note: {path} was trained on deepnet's synthetic drawings, not photos: its "
        "predictions on photos mean little. Train on the course's pictures for that: "
        "DEEPNET_DATA=/path/to/datasets deepnet train",
        file=sys.stderr,
    )


def mislabeled_command(args: argparse.Namespace) -> int:
    """``deepnet mislabeled MODEL``: a PNG gallery of the test pictures the model gets wrong."""
    from deepnet.plots import gallery_png

    model = load_model(args.model)  # a readable model file: a name to derive from
    out = (
        args.out
        if args.out is not None
        else str(Path(args.model).with_name(Path(args.model).stem + "-mislabeled.png"))
    )
    device = backend.cli_device(args.backend, args.device, model.dtype)
    folder, synthetic = _data_choice(args, model)
    inputs = {"the model": args.model}
    inputs |= data_files(folder, synthetic, "--data" if args.data is not None else ENV_VAR)
    target = check_outputs({"--out": (out, "png")}, inputs)["--out"]  # before any work
    data = load_cat_data(folder, synthetic=synthetic)
    score = score_split(model, data, "test", device)
    wrong = np.flatnonzero(score.predictions != score.labels)
    width, height = gallery_png(
        data.test_images[wrong],
        score.predictions[wrong],
        score.labels[wrong],
        model.classes,
        target.path,
        probabilities=score.probabilities[wrong],
        columns=args.columns,
        title=f"{len(wrong)} of {score.labels.size} test pictures mislabeled",
    )
    print(f"data: {safe_text(data.source)}")
    print(f"{len(wrong)} of {score.labels.size} test pictures mislabeled")
    print(f"gallery: {safe_text(out)} ({width}x{height} pixels)")
    return 0
