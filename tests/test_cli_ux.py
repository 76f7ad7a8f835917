"""What ``deepnet`` tells its user: units of the run's length, checkpoints by time, the
progress bar, ``deepnet info``, ``--help``, the cost plot's title and the predict note.

Runs in this process on the synthetic set with a 12288-4-1 network (well under a second
each); one subprocess test, bounded in time, checks the bar as a user's terminal gets it.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepnet import cli
from deepnet.cli import info, options
from deepnet.cli.common import Progress
from deepnet.engine.fit import TrainState, run_loop
from deepnet.errors import InputError
from deepnet.model_io import Model, load_model, save_model
from deepnet.synthetic import make_split

TINY = ["--synthetic", "--layers", "12288,4,1", "--print-every", "0", "--no-progress"]
REPO = Path(__file__).resolve().parents[1]


def train(*args, cwd: Path) -> int:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return cli.main(["train", *map(str, args)])
    finally:
        os.chdir(old)


# ---------------------------------------------------------------------------------------------
# 1. the run's length: iterations at full batch, epochs with --batch-size


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-n", "5", "--batch-size", "64"], "with --batch-size the run is counted in passes"),
        (["--iterations", "5", "--epochs", "5"], "not both"),
        (["--epochs", "0", "--batch-size", "64"], "--epochs must be at least 1"),
        (["--checkpoint-seconds", "-1"], "--checkpoint-seconds must be 0"),
        (["--checkpoint-seconds", "nan"], "--checkpoint-seconds must be 0"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be at least 1"),
        (["--no-checkpoint", "--checkpoint-every", "5"], "leave out --checkpoint-every"),
        (["--no-checkpoint", "--checkpoint", "c.npz"], "leave out --checkpoint"),
        (["--gram", "on", "--stream", "x.h5"], "--gram on applies to in-memory runs"),
    ],
)
def test_ambiguous_or_impossible_options_are_refused(args, words, tmp_path, capsys):
    if "--stream" in args:
        from deepnet.streaming import make_synthetic

        make_synthetic(tmp_path / "x.h5", 8, seed=0)
        args = [a for a in args] + ["--layers", "12288,4,1", "--no-progress"]
        assert train(*args, "--out", "m.npz", cwd=tmp_path) == 2
    else:
        assert train(*TINY, *args, "--out", "m.npz", cwd=tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith("deepnet: error: ") and words in err, err
    assert not (tmp_path / "m.npz").exists()


def test_a_mini_batch_run_is_counted_and_shown_in_epochs(tmp_path, capsys):
    args = [*TINY, "--epochs", "3", "--batch-size", "64", "--record-every", "1"]
    assert train(*args, "--print-every", "1", "--out", "m.npz", cwd=tmp_path) == 0
    out = capsys.readouterr().out
    assert "3 epochs of mini-batches of 64 (4 steps per epoch over 209 examples, 12 steps)" in out
    assert [int(n) for n in re.findall(r"^Cost after epoch (\d+): ", out, re.M)] == [0, 1, 2]
    assert "Cost after iteration" not in out
    model = load_model(tmp_path / "m.npz")
    assert model.training["num_iterations"] == 3 and model.training["batch_size"] == 64
    assert len(model.costs) == 3


def test_a_resumed_run_holds_epochs_to_its_checkpoint(tmp_path, monkeypatch, capsys):
    stop_at(monkeypatch, 2)
    args = [*TINY, "--batch-size", "100", "--record-every", "1"]
    assert train(*args, "--epochs", "6", "--out", "m.npz", cwd=tmp_path) == 130
    monkeypatch.undo()
    assert train("--resume", "m.ckpt.npz", "--epochs", "7", cwd=tmp_path) == 2
    assert "--epochs 7 conflicts with the checkpoint's 6" in capsys.readouterr().err
    assert train("--resume", "m.ckpt.npz", "--epochs", "6", "--no-progress", cwd=tmp_path) == 0
    assert "resuming m.ckpt.npz at epoch 2" in capsys.readouterr().out
    assert len(load_model(tmp_path / "m.npz").costs) == 6


def test_resuming_under_another_blas_kernel_set_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    from deepnet import threads  # noqa: PLC0415

    monkeypatch.setattr(threads, "kernel_set", lambda: "SkylakeX")
    stop_at(monkeypatch, 2)
    assert train(*TINY, "-n", "4", "--out", "m.npz", cwd=tmp_path) == 130
    monkeypatch.undo()
    monkeypatch.setattr(threads, "kernel_set", lambda: "Haswell")
    capsys.readouterr()
    assert train("--resume", "m.ckpt.npz", "--no-progress", cwd=tmp_path) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "kernels" in line]
    assert warned == [
        "deepnet: warning: this run started under OpenBLAS's SkylakeX kernels and resumes "
        "under Haswell: it continues to rounding, not bit for bit; set "
        "OPENBLAS_CORETYPE=SkylakeX before starting Python to resume it exactly"
    ]


def test_epochs_at_full_batch_are_iterations(tmp_path, capsys):
    assert train(*TINY, "--epochs", "7", "--out", "m.npz", cwd=tmp_path) == 0
    assert "7 iterations, full batch" in capsys.readouterr().out
    assert load_model(tmp_path / "m.npz").training["num_iterations"] == 7


def test_length_text_names_the_unit():
    settings = argparse.Namespace(num_iterations=100, batch_size=64)
    assert options.length_text(settings, 209) == (
        "100 epochs of mini-batches of 64 (4 steps per epoch over 209 examples, 400 steps)"
    )
    assert options.length_text(argparse.Namespace(num_iterations=9, batch_size=None), 209) == (
        "9 iterations, full batch"
    )
    assert options.unit(None) == "iteration" and options.unit(8) == "epoch"


# ---------------------------------------------------------------------------------------------
# 2. checkpoints by time, by count, or none


class FakeSource:
    """A step source whose every iteration takes one second of a fake clock, and whose cost
    counts how often it is read back (a device->host read on a real device)."""

    def __init__(self, clock: list[float]) -> None:
        self.clock, self.reads = clock, 0

    def run(self, iteration: int) -> Cost:
        self.clock[0] += 1.0
        return Cost(self)

    def mark(self):
        return None

    def parameters(self, mark=None):
        return {"W1": np.zeros((1, 1))}

    def resume_state(self):
        return {}

    def close(self) -> None:
        pass


class Cost:
    def __init__(self, source: FakeSource) -> None:
        self.source = source

    def __float__(self) -> float:
        self.source.reads += 1
        return 0.5


def fake_run(monkeypatch, n: int, **loop) -> tuple[list[int], list[int], FakeSource]:
    clock = [0.0]
    monkeypatch.setattr("deepnet.engine.fit.monotonic", lambda: clock[0])
    source, saved, steps = FakeSource(clock), [], []
    run_loop(source, TrainState({"W1": np.zeros((1, 1))}), num_iterations=n,
             on_checkpoint=lambda s: saved.append(s.iteration), on_step=steps.append,
             **loop)  # fmt: skip
    return saved, steps, source


def test_checkpoints_by_time_by_count_or_both(monkeypatch):
    saved, steps, source = fake_run(monkeypatch, 10, checkpoint_seconds=3.0)
    assert saved == [3, 6, 9] and steps == list(range(1, 11))
    assert source.reads == 2  # iterations 0 and 9 only: on_step reads nothing from the device
    saved, *_ = fake_run(monkeypatch, 10, checkpoint_seconds=4.0, checkpoint_every=3)
    assert saved == [3, 6, 9]  # every 3, which also keeps under 4 s between two
    saved, *_ = fake_run(monkeypatch, 10, checkpoint_seconds=5.0, checkpoint_every=4)
    assert saved == [4, 8]
    saved, *_ = fake_run(monkeypatch, 10, checkpoint_seconds=0)
    assert saved == []
    with pytest.raises(InputError, match="checkpoint_seconds"):
        fake_run(monkeypatch, 3, checkpoint_seconds=-1.0)


def count_checkpoints(monkeypatch) -> list[int]:
    written: list[int] = []
    real = cli.train.save_checkpoint

    def spy(point, path):
        written.append(point.iteration)
        return real(point, path)

    monkeypatch.setattr(cli.train, "save_checkpoint", spy)
    return written


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], [30]),  # a short run: only the checkpoint guarding the model's writing
        (["--checkpoint-every", "10"], [10, 20, 30, 30]),
        (["--checkpoint-seconds", "0"], [30]),
        (["--no-checkpoint"], []),
    ],
)
def test_which_checkpoints_a_run_writes(extra, expected, tmp_path, monkeypatch):
    written = count_checkpoints(monkeypatch)
    assert train(*TINY, "-n", "30", *extra, "--out", "m.npz", cwd=tmp_path) == 0
    assert written == expected
    assert (tmp_path / "m.npz").exists() and not (tmp_path / "m.ckpt.npz").exists()


def test_a_checkpoint_is_written_by_time(tmp_path, monkeypatch):
    written = count_checkpoints(monkeypatch)
    clock = [0.0]

    def tick() -> float:
        clock[0] += 0.25  # each call a quarter second later: several per iteration
        return clock[0]

    monkeypatch.setattr("deepnet.engine.fit.monotonic", tick)
    assert train(*TINY, "-n", "20", "--checkpoint-seconds", "1", "--out", "m.npz",
                 cwd=tmp_path) == 0  # fmt: skip
    assert len(written) > 3 and written[-1] == 20


def stop_at(monkeypatch, iteration: int) -> None:
    """Send this process a real SIGINT once the bar has moved to ``iteration``."""
    original = Progress.step

    def step_then_ctrl_c(self, done):
        original(self, done)
        if done == iteration:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Progress, "step", step_then_ctrl_c)


def test_ctrl_c_reports_the_iteration_the_bar_shows(tmp_path, monkeypatch, capsys):
    stop_at(monkeypatch, 17)  # between two recorded costs (every 10)
    args = [*TINY[:-1], "--progress", "--record-every", "10", "-n", "60"]
    assert train(*args, "--out", "m.npz", cwd=tmp_path) == 130
    err = capsys.readouterr().err
    shown = re.findall(r"(\d+)/60 \[", err)
    assert shown and int(shown[-1]) == 17, err
    assert "stopped by SIGINT after iteration 17 of 60; saved the run to m.ckpt.npz" in err


def test_ctrl_c_with_no_checkpoint_says_nothing_was_saved(tmp_path, monkeypatch, capsys):
    stop_at(monkeypatch, 4)
    args = [*TINY[:-1], "--progress", "--epochs", "20", "--batch-size", "100", "--no-checkpoint"]
    assert train(*args, "--out", "m.npz", cwd=tmp_path) == 130
    err = capsys.readouterr().err
    assert re.findall(r"epoch (\d+)/20", err)[-1] == "4", err
    assert re.findall(r"(\d+)/4.18k \[", err)[-1] == str(4 * 209), err
    assert "stopped by SIGINT after epoch 4 of 20; nothing saved (--no-checkpoint)" in err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# 3. the progress bar


def test_the_bar_moves_every_step_and_the_cost_only_when_recorded():
    bar = Progress(total=10, print_every=0, enabled=True, unit="iteration")
    try:
        bar.step(1)
        bar.step(2)
        assert bar.bar.n == 2 and not bar.bar.postfix and bar.bar.unit == "it"
        bar(TrainState({}, [0.5], 3), 0.5)
        bar.step(3)
        assert bar.bar.n == 3 and "cost=0.500000" in bar.bar.postfix
        bar.step(4)
        assert bar.bar.n == 4 and "cost=0.500000" in bar.bar.postfix
    finally:
        bar.close(finished=False)


def test_a_mini_batch_bar_counts_examples_step_by_step():
    bar = Progress(total=10, print_every=0, enabled=True, unit="epoch", examples=100)
    try:
        assert bar.bar.total == 1000 and bar.bar.unit == "ex"
        bar.batch(64)
        assert bar.bar.n == 64 and bar.bar.desc.startswith("epoch 0/10")
        bar.batch(36)
        bar.step(1)
        assert bar.bar.n == 100 and bar.bar.desc.startswith("epoch 1/10")
        bar.batch(64)
        assert bar.bar.n == 164 and not bar.bar.postfix
    finally:
        bar.close()
    assert bar.bar.n == 1000 and bar.bar.desc.startswith("epoch 10/10")


def test_the_bar_a_terminal_sees(tmp_path):
    """In a subprocess, as a user runs it: the bar counts every epoch with a rate."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "c")}
    env.pop("DEEPNET_DATA", None)
    cmd = [sys.executable, "-m", "deepnet.cli", "train", *TINY[:-1], "--progress", "--epochs",
           "12", "--batch-size", "128", "--record-every", "4", "--out", "m.npz"]  # fmt: skip
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=240, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.search(r"epoch 12/12: 100%.*2\.51k/2\.51k \[[^\]]*(ex/s|s/ex)", result.stderr), (
        result.stderr
    )
    assert "cost=" in result.stderr


# ---------------------------------------------------------------------------------------------
# 4. deepnet info


def test_info_says_cache_mpi_blas_extras_and_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "fresh"))
    assert cli.main(["info", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    cache = tmp_path / "fresh" / "deepnet"
    assert re.search(rf"^synthetic data: {re.escape(str(cache))}\S* \(not generated yet", out, re.M)
    assert re.search(r"^libraries: .*matplotlib \d", out, re.M)
    assert re.search(r"^BLAS: \S+", out, re.M)
    mpi = re.search(r"^mpi: mpi4py (.+); launcher: (.+)$", out, re.M)
    assert mpi, out
    assert (mpi[1] == "not installed") == (info.version("mpi4py") is None)
    assert (info.mpi_launcher() is None) == ("no mpiexec" in mpi[2])
    extras = re.search(r"^extras: (.+) installed; not installed: (.+)$", out, re.M)
    assert extras, out
    declared = info.declared_extras()
    assert declared is not None and {"cuda12", "cuda13", "mpi", "test"} <= set(declared)
    named = {e.strip() for part in extras.groups() for e in part.split(",")} - {"none"}
    assert named == set(declared)
    assert ("mpi" in extras[1]) == all(info.version(n) for n in declared["mpi"])


def test_info_says_when_the_synthetic_set_is_there(tmp_path, monkeypatch):
    from deepnet.synthetic import ensure_synthetic

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert "(not generated yet" in info.synthetic_line()
    ensure_synthetic()
    assert info.synthetic_line().endswith("(present)")


# ---------------------------------------------------------------------------------------------
# 5. --help


def subparser(name: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


@pytest.mark.parametrize("command", ["train", "make-data", "mislabeled"])
def test_every_option_with_a_value_says_its_default(command):
    for action in subparser(command)._actions:
        if not action.option_strings or action.nargs == 0:
            continue  # positionals, --help and on/off switches
        assert "default" in (action.help or ""), action.option_strings


def test_help_names_units_and_the_gram_switch():
    actions = {a.dest: a for a in subparser("train")._actions}
    assert "full-batch" in actions["iterations"].help
    assert "passes over the training set" in actions["epochs"].help
    assert "examples" in actions["batch_size"].help
    assert "(default: 30 s)" in actions["checkpoint_seconds"].help
    gram = actions["gram"]
    assert gram.choices == ["auto", "on", "off"] and gram.default == "auto"
    assert "auto:" in gram.help and "X.T @ X" in gram.help
    assert options.GRAM == {"auto": None, "on": True, "off": False}


@pytest.mark.parametrize(("switch", "gram"), [("auto", None), ("on", True), ("off", False)])
def test_gram_switch_reaches_the_model_functions(switch, gram, tmp_path, monkeypatch):
    from deepnet import training

    seen = []
    real = training.fit

    def spy(*args, **kwargs):
        seen.append(kwargs.get("gram"))
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "fit", spy)
    assert train(*TINY, "-n", "3", "--gram", switch, "--out", "m.npz", cwd=tmp_path) == 0
    assert seen == [gram]


# ---------------------------------------------------------------------------------------------
# 6. the cost plot


def test_the_cost_plot_names_the_run(tmp_path, monkeypatch):
    from deepnet import plots

    calls = []
    real = plots.cost_curve_png

    def spy(costs, path, **kwargs):
        calls.append(kwargs)
        return real(costs, path, **kwargs)

    monkeypatch.setattr(plots, "cost_curve_png", spy)
    assert train(*TINY, "-n", "25", "--record-every", "10", "--dtype", "float32",
                 "--out", "m.npz", cwd=tmp_path) == 0  # fmt: skip
    (kwargs,) = calls
    model = load_model(tmp_path / "m.npz")
    assert kwargs["model"] == "L-layer 12288-4-1" and kwargs["data"] == "synthetic"
    assert kwargs["dtype"] == "float32" and kwargs["iterations"] == 25
    assert kwargs["train_accuracy"] == model.training["train_accuracy"]
    assert kwargs["test_accuracy"] == model.training["test_accuracy"]
    assert kwargs["x_label"] == "iteration" and kwargs["record_every"] == 10
    assert (tmp_path / "m-costs.png").exists()


# ---------------------------------------------------------------------------------------------
# 7. predict with a model of the synthetic drawings


@pytest.mark.parametrize("synthetic", [True, False])
def test_predict_says_once_what_a_synthetic_model_is_worth(synthetic, tmp_path, capsys):
    rng = np.random.RandomState(0)
    model = Model(
        parameters={"W1": rng.randn(4, 12288) * 0.01, "b1": np.zeros((4, 1)),
                    "W2": rng.randn(1, 4) * 0.01, "b2": np.zeros((1, 1))},
        layer_dims=[12288, 4, 1], classes=("non-cat", "cat"), dtype="float64",
        model="L-layer", costs=[0.7], training={"synthetic": synthetic},
    )  # fmt: skip
    save_model(model, tmp_path / "m.npz")
    images = make_split("test")[0][:2]
    paths = [tmp_path / f"{i}.png" for i in range(2)]
    for image, path in zip(images, paths, strict=True):
        Image.fromarray(image).save(path)
    assert cli.main(["predict", str(tmp_path / "m.npz"), *map(str, paths)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2
    notes = [line for line in captured.err.splitlines() if "synthetic drawings" in line]
    assert len(notes) == (1 if synthetic else 0)
    if synthetic:
        assert "mean little" in notes[0] and notes[0].startswith("deepnet: note: ")


# ---------------------------------------------------------------------------------------------
# 8. CI runs the README's commands


def test_ci_runs_readme_check_after_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    test_command = next(line for line in ci if "python -m pytest" in line)
    assert test_command in readme  # word for word
    check = ci.index("timeout 900 scripts/readme-check")
    status = next(i for i, line in enumerate(ci) if line.startswith('[ "$status" -eq 0 ]'))
    assert ci.index(test_command) < status < check


def test_readme_quick_run_counts_epochs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quick = [line for line in readme.splitlines()
             if "--batch-size" in line and re.match(r"(\| `)?deepnet train ", line)]  # fmt: skip
    assert quick and all("--iterations" not in line and " -n " not in line for line in quick)
    assert any("--epochs" in line for line in quick)
