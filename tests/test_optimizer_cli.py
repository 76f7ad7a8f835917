"""``deepnet train`` with the second course's options: recorded in the model, stopped by
SIGINT and resumed to the uninterrupted run bit for bit, checked like every option."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from cli_process import interrupt, run
from deepnet import cli
from deepnet.checkpoint import load_checkpoint, save_checkpoint
from deepnet.model_io import load_model
from deepnet.settings import checkpoint_settings

COMMON = ["--synthetic", "--layers", "12288,6,3,1", "--record-every", "10", "--print-every", "0"]
COMMON += ["--checkpoint-every", "20", "--no-progress", "--init", "he"]


def deepnet(*args) -> list[str]:
    return [sys.executable, "-m", "deepnet.cli", *map(str, args)]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(
    "options",
    [
        pytest.param(["--optimizer", "adam", "--lr", "0.001", "--batch-size", "32",
                      "--lambd", "0.2", "--keep-prob", "0.8", "--decay-rate", "0.01"],
                     id="adam-minibatch-l2-dropout-decay"),
        pytest.param(["--optimizer", "momentum", "--lr", "0.01", "--lambd", "0.5",
                      "--early-stopping", "--patience", "1000"], id="momentum-gram-early"),
    ],
)  # fmt: skip
def test_sigint_and_resume_give_the_uninterrupted_run(tmp_path, options):
    length = ["--epochs", 200] if "--batch-size" in options else ["-n", 600]
    args = ["train", *COMMON, *options, *length]
    run(deepnet(*args, "--out", "ref.npz"), tmp_path)
    status, err = interrupt(deepnet(*args, "--out", "run.npz"), tmp_path / "run.ckpt.npz",
                            tmp_path)  # fmt: skip
    assert status == 130 and "stopped by SIGINT" in err and "Traceback" not in err, err
    point = load_checkpoint(tmp_path / "run.ckpt.npz")
    assert 20 <= point.iteration < 200
    assert any(k.startswith("opt.") for k in point.resume)
    out = run(deepnet("train", "--resume", "run.ckpt.npz"), tmp_path)
    unit = "epoch" if "--batch-size" in options else "iteration"
    assert f"at {unit} {point.iteration}" in out.stdout
    ref, got = load_model(tmp_path / "ref.npz"), load_model(tmp_path / "run.npz")
    assert got.costs == ref.costs
    for key, value in ref.parameters.items():
        assert np.array_equal(got.parameters[key], value), key
    name = options[1]
    assert got.training["optimizer"]["name"] == name
    assert got.training["lambd"] == float(options[options.index("--lambd") + 1])
    if "--early-stopping" in options:
        assert got.training["early_stopping"]["patience"] == 1000
        assert got.training["early_stopping_result"] == ref.training["early_stopping_result"]


def test_the_options_are_checked_and_a_resume_keeps_them(tmp_path, capsys):
    bad = {
        ("--keep-prob", "0"): r"keep_prob must be in (0, 1]",
        ("--lambd", "-1"): "lambd must be >= 0",
        ("--optimizer", "momentum", "--beta", "1"): "beta must be in [0, 1)",
        ("--optimizer", "adam", "--epsilon", "0"): "epsilon must be > 0",
        ("--decay-interval", "10"): "decay needs a decay_rate",
        ("--early-stopping", "--validation-fraction", "1.5"): "validation_fraction must be in",
        ("--early-stopping", "--patience", "0"): "patience",
        ("--beta1", "0.8"): "--beta1 applies only with --optimizer adam",
        ("--optimizer", "adam", "--beta", "0.8"): "--beta applies only with --optimizer momentum",
        ("--patience", "3"): "--patience applies only with --early-stopping",
    }
    for options, text in bad.items():
        status = cli.main(["train", "--synthetic", "-n", "1", "--out", str(tmp_path / "x.npz"),
                           *options])  # fmt: skip
        err = capsys.readouterr().err
        assert status == 2 and text in err and "Traceback" not in err, (options, err)
    assert cli.main(["make-data", str(tmp_path / "f.h5"), "--n", "8"]) == 0
    capsys.readouterr()
    stream = ["train", "--stream", str(tmp_path / "f.h5"), "-n", "1"]
    for options, text in {
        ("--early-stopping",): "--early-stopping holds out examples of data in memory",
    }.items():
        status = cli.main([*stream, *options, "--out", str(tmp_path / "s.npz")])
        err = capsys.readouterr().err
        assert status == 2 and text in err and "Traceback" not in err, (options, err)
    assert cli.main([*stream, "--lambd", "0.1", "--keep-prob", "0.9",
                     "--out", str(tmp_path / "l2.npz")]) == 0  # fmt: skip
    assert load_model(tmp_path / "l2.npz").training["lambd"] == 0.1
    status = cli.main(["train", "--stream", str(tmp_path / "f.h5"), "--epochs", "1",
                       "--keep-prob", "0.5", "--batch-size", "4", "--lambd", "0.1",
                       "--out", str(tmp_path / "dropout.npz")])  # fmt: skip
    assert status == 0, capsys.readouterr().err


def test_a_resumed_run_refuses_another_optimizer(tmp_path, capsys, monkeypatch):
    from deepnet.cli import common

    args = ["train", *COMMON, "-n", "40", "--out", str(tmp_path / "m.npz")]
    stops = iter([False] * 25 + [True] * 100)
    with monkeypatch.context() as patch:
        patch.setattr(common.StopRequest, "__call__", lambda self: next(stops))
        assert cli.main([*args, "--optimizer", "adam"]) == 130
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(tmp_path / "m.ckpt.npz"), "--optimizer", "gd"]) == 2
    assert "--optimizer gd conflicts with the checkpoint's adam" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path / "m.ckpt.npz")]) == 0
    assert load_model(tmp_path / "m.npz").training["optimizer"]["name"] == "adam"


def test_checkpoints_of_earlier_versions_resume_with_the_defaults(tmp_path):
    from deepnet.checkpoint import Checkpoint

    rng = np.random.default_rng(0)
    params = {"W1": rng.random((3, 12288)), "b1": np.zeros((3, 1)),
              "W2": rng.random((1, 3)), "b2": np.zeros((1, 1))}  # fmt: skip
    old = {"model": "L-layer", "layer_dims": [12288, 3, 1], "learning_rate": 0.01,
           "num_iterations": 50, "dtype": "float64", "seed": 1, "init": "lecun",
           "batch_size": None, "record_every": 10, "print_every": 10, "hidden": "relu"}  # fmt: skip
    path = tmp_path / "old.ckpt.npz"
    save_checkpoint(Checkpoint(parameters=params, costs=[0.7], iteration=10, settings=old,
                               data={"fingerprint": "x"}, outputs={}, layer_dims=[12288, 3, 1],
                               dtype="float64"), path)  # fmt: skip
    settings = checkpoint_settings(load_checkpoint(path), path)
    assert (settings.optimizer, settings.lambd, settings.keep_prob) == ("gd", 0.0, 1.0)
    assert not settings.early_stopping and settings.plain
