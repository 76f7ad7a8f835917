"""``deepnet evaluate``, ``predict`` and ``mislabeled``: using a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from deepnet import backend
from deepnet.cli.common import device_line, error
from deepnet.data import Dataset, data_dir, load_cat_data, load_picture, preprocess
from deepnet.errors import DeepnetError, InputError
from deepnet.model_io import Model, load_model
from deepnet.scoring import probabilities, score_split


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
    device = backend.cli_device(args.backend, args.device, model.dtype)
    data = _data_for_model(args, model)
    print(f"model: {_describe(model, args.model)}")
    print(f"data: {data.source}")
    print(f"device: {device_line(device)}")
    corner = "true \\ predicted"
    first, width = len(corner) + 2, max(len(n) for n in model.classes) + 3
    for split in ("train", "test"):
        score = score_split(model, data, split, device)
        print(f"{split} accuracy: {score.summary()}")
        print(f"  {corner:<{first}}" + "".join(f"{n:>{width}}" for n in model.classes))
        for name, row in zip(model.classes, score.confusion(), strict=True):
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
    if pictures:
        proba = probabilities(model, preprocess(np.stack(pictures)), device)
        for name, p in zip(names, proba, strict=True):
            label = model.classes[int(p > 0.5)]
            print(f"{name}: {label} (P({model.classes[1]}) = {p:.4f})")
    return 2 if failed else 0  # pictures it could not read are input errors


def mislabeled_command(args: argparse.Namespace) -> int:
    """``deepnet mislabeled MODEL``: a PNG gallery of the test pictures the model gets wrong."""
    from deepnet.plots import gallery_png

    model = load_model(args.model)
    device = backend.cli_device(args.backend, args.device, model.dtype)
    data = _data_for_model(args, model)
    score = score_split(model, data, "test", device)
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
