"""Interrupted training: ``deepnet train`` checkpoints, stops cleanly on a signal, and resumes.

The signal tests signal a real ``deepnet train`` process, then continue it with
``deepnet train --resume`` in another, and hold the result to an uninterrupted run's:
parameters and costs equal bit for bit (full batch, on the Gram path, included). A tiny
data set made here (16 training pictures) and a 12288-4-1 network keep each run to about a second.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from course_files import write_data
from deepnet import cli
from deepnet.checkpoint import Checkpoint, fingerprint, load_checkpoint, save_checkpoint
from deepnet.data import load_dataset
from deepnet.errors import ModelFileError
from deepnet.model_io import META_NAME, load_model
from deepnet.training import L_layer_model, two_layer_model

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

TRAIN = ["--layers", "12288,4,1", "--learning-rate", "0.01", "--record-every", "10"]
TRAIN += ["--print-every", "0", "--checkpoint-every", "50"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data(tmp_path_factory.mktemp("data"))


def command(*args) -> list[str]:
    return [sys.executable, "-m", "deepnet.cli", "train", *map(str, args)]


def train(*args, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result


def interrupt(*args, signum: int, checkpoint: Path, env, cwd: Path):
    """Start ``deepnet train``, wait for its first checkpoint, send ``signum``; (status, stderr)."""
    proc = subprocess.Popen(
        command(*args), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not checkpoint.exists():  # written atomically: it exists only once complete
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no checkpoint appeared while training: {proc.communicate()}")
        time.sleep(0.002)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def assert_same_run(resumed: Path, reference: Path) -> None:
    a, b = load_model(resumed), load_model(reference)
    assert list(a.parameters) == list(b.parameters)
    for key, value in b.parameters.items():
        np.testing.assert_array_equal(a.parameters[key], value)
    assert a.costs == b.costs


def stop_line(err: str, name: str, total: int, checkpoint: Path) -> int:
    """The one line a stopped run prints; returns the iteration it stopped after."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    pattern = (
        rf"deepnet: stopped by {name} after (?:iteration|epoch) (\d+) of {total}; saved the run to "
        rf"(.+); continue it with: deepnet train --resume (.+)"
    )
    match = re.fullmatch(pattern, lines[0])
    assert match, lines[0]
    assert Path(match[2]) == checkpoint and Path(match[3]) == checkpoint
    return int(match[1])


def test_sigint_saves_the_run_and_resume_finishes_it_as_if_uninterrupted(data, env, tmp_path):
    args = [*TRAIN, "--data", data, "-n", 3000]
    train(*args, "--out", "reference.npz", env=env, cwd=tmp_path)
    checkpoint = tmp_path / "run.ckpt.npz"
    status, err = interrupt(
        *args, "--out", "run.npz", signum=signal.SIGINT, checkpoint=checkpoint, env=env,
        cwd=tmp_path,
    )  # fmt: skip
    assert status == 130
    stopped_at = stop_line(err, "SIGINT", 3000, Path("run.ckpt.npz"))
    assert 50 <= stopped_at < 3000
    assert load_checkpoint(checkpoint).iteration == stopped_at
    assert not (tmp_path / "run.npz").exists()

    result = train("--resume", "run.ckpt.npz", env=env, cwd=tmp_path)
    assert f"resuming run.ckpt.npz at iteration {stopped_at}" in result.stdout
    assert_same_run(tmp_path / "run.npz", tmp_path / "reference.npz")
    assert not checkpoint.exists()  # the finished model holds everything now
    assert load_model(tmp_path / "run.npz").training["resumed_at"] == stopped_at


def test_sigterm_mid_mini_batch_run_and_resume_by_out_path(data, env, tmp_path):
    args = [*TRAIN, "--data", data, "--epochs", 600, "--batch-size", 5]
    train(*args, "--out", "reference.npz", env=env, cwd=tmp_path)
    checkpoint = tmp_path / "run.ckpt.npz"
    status, err = interrupt(
        *args, "--out", "run.npz", signum=signal.SIGTERM, checkpoint=checkpoint, env=env,
        cwd=tmp_path,
    )  # fmt: skip
    assert status == 143
    stopped_at = stop_line(err, "SIGTERM", 600, Path("run.ckpt.npz"))
    assert 50 <= stopped_at < 600

    # --resume without a path finds the checkpoint beside --out; repeating a setting is fine.
    train("--resume", "--out", "run.npz", "--batch-size", 5, env=env, cwd=tmp_path)
    assert_same_run(tmp_path / "run.npz", tmp_path / "reference.npz")
    assert not checkpoint.exists()


# ---------------------------------------------------------------------------------------------
# In this process: the checkpoint's contents and every refusal of --resume


def run_cli(*args) -> int:
    return cli.main(["train", *map(str, args)])


@pytest.fixture
def stopped(data, tmp_path, monkeypatch) -> Path:
    """A run stopped by a real SIGINT to this process at iteration 21; its checkpoint."""
    monkeypatch.chdir(tmp_path)
    original = cli.Progress.__call__

    def progress_then_ctrl_c(self, state, cost):
        original(self, state, cost)
        if state.iteration == 21:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(cli.Progress, "__call__", progress_then_ctrl_c)
    assert run_cli(*TRAIN, "--data", data, "-n", 60, "--out", "m.npz") == 130
    monkeypatch.setattr(cli.Progress, "__call__", original)
    return tmp_path / "m.ckpt.npz"


def test_a_checkpoint_holds_the_whole_run(stopped, data):
    point = load_checkpoint(stopped)
    assert point.iteration == 21 and len(point.costs) == 3  # iterations 0, 10, 20
    assert point.settings == {
        "model": "L-layer", "layer_dims": [12288, 4, 1], "learning_rate": 0.01,
        "num_iterations": 60, "dtype": "float64", "seed": 1, "init": "lecun",
        "batch_size": None, "record_every": 10, "print_every": 0, "hidden": "relu",
        "optimizer": "gd", "beta": 0.9, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8,
        "decay_rate": None, "decay_interval": None, "lambd": 0.0, "keep_prob": 1.0,
        "early_stopping": False, "validation_fraction": 0.1, "patience": 10,
    }  # fmt: skip
    dataset = load_dataset(data)
    assert point.data["fingerprint"] == fingerprint(dataset.train_x, dataset.train_y)
    assert point.data["folder"] == str(data.resolve()) and point.data["synthetic"] is False
    assert point.data["source"] == dataset.source
    assert point.outputs["out"] == str(stopped.with_name("m.npz").resolve())
    assert [p.name for p in stopped.parent.iterdir() if p.name.startswith(".")] == []


def test_signal_handlers_are_restored(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    seen = {}

    def spy(self, state, cost):
        seen.update({s: signal.getsignal(s) for s in before})

    monkeypatch.setattr(cli.Progress, "__call__", spy)
    assert run_cli(*TRAIN, "--data", data, "-n", 3, "--out", "m.npz") == 0
    assert seen and all(
        type(getattr(h, "__self__", None)) is cli.StopRequest for h in seen.values()
    )
    assert {s: signal.getsignal(s) for s in before} == before
    assert not (tmp_path / "m.ckpt.npz").exists()


def test_stop_request_catches_both_signals_and_restores():
    previous = signal.getsignal(signal.SIGTERM)
    with cli.StopRequest() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop() and stop.signum == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGINT)  # a second signal changes nothing
        assert stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == previous


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("deepnet: error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("option", "value", "shown"),
    [
        ("--learning-rate", 0.02, "--learning-rate 0.02 conflicts with the checkpoint's 0.01"),
        ("--layers", "12288,5,1", "--layers 12288,5,1 conflicts with the checkpoint's 12288,4,1"),
        ("--iterations", 100, "--iterations 100 conflicts with the checkpoint's 60"),
        ("--batch-size", 8, "--batch-size 8 conflicts with the checkpoint's none"),
        ("--seed", 2, "--seed 2 conflicts"),
        ("--dtype", "float32", "--dtype float32 conflicts"),
        ("--init", "small", "--init small conflicts"),
        ("--record-every", 20, "--record-every 20 conflicts"),
        ("--model", "two-layer", "--model two-layer conflicts"),
    ],
)
def test_resume_refuses_conflicting_settings(stopped, capsys, option, value, shown):
    capsys.readouterr()
    assert run_cli("--resume", stopped, option, value) == 2
    line = one_line_error(capsys)
    assert shown in line and "keeps the settings it started with" in line
    assert stopped.exists()


def test_resume_refuses_other_data(stopped, tmp_path, capsys):
    other = write_data(tmp_path / "other", seed=1)
    capsys.readouterr()
    assert run_cli("--resume", stopped, "--data", other) == 2
    assert "was trained on other data" in one_line_error(capsys)
    # the recorded folder, changed behind the checkpoint's back, is refused the same way
    write_data(Path(load_checkpoint(stopped).data["folder"]), seed=2)
    assert run_cli("--resume", stopped) == 2
    assert "was trained on other data" in one_line_error(capsys)


def test_resume_with_matching_options_to_another_model_path(stopped, data, capsys):
    recorded = load_checkpoint(stopped).costs
    assert run_cli("--resume", stopped, "-n", 60, "--lr", 0.01, "--out", "other.npz") == 0
    assert not stopped.exists()
    resumed = stopped.with_name("other.npz")
    assert load_model(resumed).costs[:3] == recorded
    assert run_cli(*TRAIN, "--data", data, "-n", 60, "--out", "reference.npz") == 0
    assert_same_run(resumed, stopped.with_name("reference.npz"))


def test_fresh_run_will_not_overwrite_an_unfinished_one(stopped, data, capsys):
    capsys.readouterr()
    assert run_cli(*TRAIN, "--data", data, "-n", 60, "--out", "m.npz") == 2
    line = one_line_error(capsys)
    assert "holds an unfinished run" in line and "--resume m.ckpt.npz" in line
    assert load_checkpoint(stopped).iteration == 21  # untouched


def test_what_cannot_be_resumed(stopped, tmp_path, capsys):
    capsys.readouterr()
    assert run_cli("--resume", tmp_path / "none.ckpt.npz") == 2
    assert "no checkpoint at" in one_line_error(capsys)
    assert run_cli("--resume", stopped, "--checkpoint-every", 0) == 2
    assert "--checkpoint-every must be at least 1" in one_line_error(capsys)
    assert run_cli("--resume", stopped, "--print-every", 7) == 2
    assert "multiple of --record-every (10)" in one_line_error(capsys)
    finished = tmp_path / "finished.npz"
    point = load_checkpoint(stopped)
    assert run_cli(*TRAIN, "--data", point.data["folder"], "-n", 2, "--out", finished) == 0
    assert run_cli("--resume", finished) == 2
    assert "a model file, not a checkpoint" in one_line_error(capsys)


def _edit_record(path: Path, change) -> None:
    point = load_checkpoint(path)
    change(point)
    save_checkpoint(point, path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.settings.update(learning_rate="fast"), "learning_rate setting"),
        (lambda p: p.settings.update(init="xavier"), "init 'xavier' is unknown"),
        (lambda p: p.settings.update(layer_dims=[12288, 5, 1]), "do not match its parameters"),
        (lambda p: p.settings.update(learning_rate=-1.0), "learning_rate must be"),
        (lambda p: setattr(p, "iteration", 99), "outside its run of 60"),
        (lambda p: setattr(p, "iteration", 35), "do not match iteration 35"),
        (lambda p: p.data.pop("fingerprint"), "which data it trains on"),
    ],
)
def test_damaged_checkpoint_records_are_refused(stopped, capsys, change, message):
    _edit_record(stopped, change)
    capsys.readouterr()
    assert run_cli("--resume", stopped) == 2
    assert message in one_line_error(capsys)


def test_a_damaged_checkpoint_file_is_refused(stopped, capsys):
    stopped.write_bytes(stopped.read_bytes()[:-100])
    assert run_cli("--resume", stopped) == 2
    assert "damaged/truncated" in one_line_error(capsys)
    with zipfile.ZipFile(stopped.with_name("plain.npz"), "w") as archive:
        archive.writestr(META_NAME, "{}")
    with pytest.raises(ModelFileError):
        load_checkpoint(stopped.with_name("plain.npz"))


@pytest.mark.parametrize("model", ["L-layer", "two-layer"])
def test_run_training_is_the_course_model_function(data, model):
    dataset = load_dataset(data)
    args = cli.build_parser().parse_args(
        [
            "train",
            "--model",
            model,
            "--layers",
            "12288,3,1",
            "-n",
            "30",
            "--record-every",
            "7",
            "--print-every",
            "0",
        ]
    )
    settings = cli.train_settings(args)
    state = cli.run_training(settings, dataset, "cpu")
    function = L_layer_model if model == "L-layer" else two_layer_model
    parameters, costs = function(
        dataset.train_x, dataset.train_y, settings.layer_dims, num_iterations=30,
        init=settings.init, record_every=7,
    )  # fmt: skip
    assert state.costs == costs
    for key, value in parameters.items():
        np.testing.assert_array_equal(state.parameters[key], value)


def test_checkpoint_round_trip(tmp_path):
    point = Checkpoint(
        parameters={"W1": np.ones((1, 12288)), "b1": np.zeros((1, 1))},
        costs=[0.5],
        iteration=1,
        settings=asdict(cli.train_settings(cli.build_parser().parse_args(["train"]))) | {
            "num_iterations": 5, "layer_dims": [12288, 1]},
        data={"fingerprint": "x", "source": "s"},
        outputs={"out": "o.npz"},
        layer_dims=[12288, 1],
        dtype="float64",
    )  # fmt: skip
    loaded = load_checkpoint(save_checkpoint(point, tmp_path / "c.npz"))
    assert (loaded.iteration, loaded.costs, loaded.settings) == (1, [0.5], point.settings)
    np.testing.assert_array_equal(loaded.parameters["W1"], point.parameters["W1"])


def test_interrupted_while_saving_the_model_keeps_the_finished_run(data, tmp_path, monkeypatch,
                                                                  capsys):  # fmt: skip
    monkeypatch.chdir(tmp_path)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(cli.train, "save_model", ctrl_c)  # deepnet.cli.train writes the model
        assert run_cli(*TRAIN, "--data", data, "-n", 30, "--out", "m.npz") == 130
    line = one_line_error(capsys)
    assert "interrupted while saving" in line and "deepnet train --resume m.ckpt.npz" in line
    assert load_checkpoint(tmp_path / "m.ckpt.npz").iteration == 30  # finished, not lost
    assert run_cli("--resume", "m.ckpt.npz") == 0
    assert "resuming m.ckpt.npz at iteration 30" in capsys.readouterr().out
    assert run_cli(*TRAIN, "--data", data, "-n", 30, "--out", "reference.npz") == 0
    assert_same_run(tmp_path / "m.npz", tmp_path / "reference.npz")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--seed", "-1"], "--seed must be an integer from 0 to 2**32 - 1"),  # was ValueError
        (["--layers", ","], "layer_dims needs at least 2 sizes"),  # was IndexError
        (["--layers", "12288,0,1"], "layer sizes must be positive integers"),
        (["--lr", "nan"], "learning_rate must be a finite number > 0"),
    ],
)
def test_train_options_are_checked_before_any_work(options, message, capsys, monkeypatch):
    monkeypatch.setattr(cli, "load_cat_data", lambda *a, **k: pytest.fail("loaded data"))
    assert cli.main(["train", *options]) == 2
    assert message in one_line_error(capsys)
