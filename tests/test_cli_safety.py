"""Issue 13 through the ``deepnet`` command: nothing a user has is lost, nothing hangs, every
refusal is one line naming the path and the real cause.

Each class of fault has a test: outputs that collide, foreign and special files, a checkpoint
that redirects its resumed run, two runs on one checkpoint (real processes), stale
temporaries (real ``kill -9``), a full disk (injected ENOSPC), MPI agreement on an error,
FIFOs, tracebacks turned into errors, terminal escape codes, and the wrong messages.
Every test is bounded: subprocesses by ``timeout=``, in-process runs by an alarm.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cli_process import mpiexec
from course_files import write_data
from deepnet import cli, fileio
from deepnet.checkpoint import load_checkpoint, save_checkpoint
from deepnet.cli import common
from deepnet.cli import train as cli_train
from deepnet.data import FILES
from deepnet.errors import InputError
from deepnet.model_io import META_NAME, load_model
from deepnet.training import L_layer_model, fit, two_layer_model

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX files and signals")

TINY = ["--layers", "12288,4,1", "--learning-rate", "0.01", "--record-every", "10"]
TINY += ["--print-every", "0", "--no-progress"]
LIMIT_S = 120  # no test here takes more than a few seconds; a hang fails instead of stalling


@pytest.fixture(autouse=True)
def bounded():
    """In-process runs are bounded too: an alarm turns a hang into a failure."""

    def hang(signum, frame):
        raise TimeoutError(f"the test ran for more than {LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(LIMIT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def fresh_cli_state():
    common.SILENT = False
    yield
    common.SILENT = False


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data(tmp_path_factory.mktemp("data"))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
            "XDG_CACHE_HOME": str(tmp_path / "cache"), "DEEPNET_DATA": ""}  # fmt: skip


def run(*args, env: dict[str, str], cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    """``deepnet ARGS`` in a subprocess, bounded."""
    return subprocess.run(
        [sys.executable, "-m", "deepnet.cli", *map(str, args)],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def one_error(stderr: str) -> str:
    """The single ``deepnet: error:`` line a refused command prints (and nothing else)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("deepnet: error: "), stderr
    return lines[0]


def main(*args, capsys) -> tuple[int, str, str]:
    """``deepnet ARGS`` in this process: (status, stdout, stderr)."""
    capsys.readouterr()
    status = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry of ``folder`` with its content (files) or kind: to show nothing changed."""
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.exists():
            found[str(path)] = "link"
        elif path.is_file():
            found[str(path)] = path.read_bytes()
        else:
            found[str(path)] = "folder" if path.is_dir() else "special"
    return found


def no_data_loaded(monkeypatch) -> None:
    """Refusals come before any work: loading the data fails the test."""

    def loaded(*args, **kwargs):
        raise AssertionError("the data was loaded before the outputs were checked")

    for module in (cli.modes, cli.runs, cli.use):
        monkeypatch.setattr(module, "load_cat_data", loaded)


@pytest.fixture
def model(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained model (a copy per test: some tests forge it)."""
    folder = tmp_path_factory.mktemp("model")
    assert cli.main(["train", *TINY, "-n", "3", "--data", str(data), "--out",
                     str(folder / "m.npz")]) == 0  # fmt: skip
    return folder / "m.npz"


def edit_meta(path: Path, change) -> None:
    """Rewrite a model file's deepnet.json with ``change(meta)`` applied (NaN allowed)."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    meta = json.loads(members[META_NAME])
    change(meta)
    members[META_NAME] = json.dumps(meta, allow_nan=True).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)


class StopAfter(cli_train.StopRequest):
    """A stop request that fires (as SIGTERM) once ``checks`` iterations have run."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self.left = checks

    def __call__(self) -> bool:
        self.left -= 1
        if self.left <= 0:
            self.signum = signal.SIGTERM
        return self.signum is not None


def stopped_run(folder: Path, data: Path, monkeypatch, capsys) -> Path:
    """An unfinished run's checkpoint, ``folder/m.ckpt.npz``, stopped at iteration 21."""
    with monkeypatch.context() as patch:
        patch.setattr(cli_train, "StopRequest", lambda: StopAfter(21))
        status, _, err = main("train", *TINY, "-n", 60, "--data", data, "--checkpoint-every",
                              10, "--out", folder / "m.npz", capsys=capsys)  # fmt: skip
    assert status == 128 + signal.SIGTERM, err
    return folder / "m.ckpt.npz"


# ---------------------------------------------------------------------------------------------
# data loss: outputs that collide, foreign and special files


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["train", "--out", "m.npz", "--checkpoint", "m.npz"],
         "--out and --checkpoint are the same file (m.npz)"),
        (["train", "--out", "m.npz", "--plot", "m.npz"], "--out and --plot are the same file"),
        (["train", "--out", "x.npz", "--plot", "m.npz"],
         "--plot m.npz is a deepnet model, not a picture (PNG)"),
        (["train", "--out", "x.npz", "--checkpoint", "m.npz"],
         "--checkpoint m.npz is a deepnet model, not a checkpoint"),
        (["train", "--out", "sub/../m-costs.png"], "--out sub/../m-costs.png is a deepnet png"),
        (["train", "--out", "data/train_catvnoncat.h5"], "is the training data, which this "),
        (["train", "--out", "x.npz", "--plot", "data/test_catvnoncat.h5"], "is the test data"),
        (["train", "--out", "link.npz", "--plot", "m.npz"],
         "--out link.npz and --plot m.npz are the same file"),
        (["mislabeled", "m.npz", "--out", "m.npz"], "--out m.npz is the model, which this"),
        (["mislabeled", "m.npz", "--out", "data/test_catvnoncat.h5"], "is the test data"),
    ],
)  # fmt: skip
def test_outputs_that_collide_with_each_other_or_an_input_are_refused_before_any_work(
    command, message, model, data, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(model.parent)
    os.symlink(data, "data")
    os.symlink("m.npz", "link.npz")
    before = snapshot(model.parent) | snapshot(data)
    no_data_loaded(monkeypatch)
    options = TINY if command[0] == "train" else []
    status, _, err = main(*command, "--data", "data", *options, capsys=capsys)
    assert status == 2
    assert message in one_error(err)
    assert snapshot(model.parent) | snapshot(data) == before  # nothing written, nothing lost


def test_only_deepnet_files_are_replaced_and_replacing_a_model_is_said(data, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hi\n")
    (tmp_path / "photo.png").write_bytes((tmp_path / "notes.txt").read_bytes())
    before = snapshot(tmp_path)
    for option, name in [("--out", "notes.txt"), ("--plot", "photo.png"),
                         ("--checkpoint", "notes.txt")]:  # fmt: skip
        args = ["--out", tmp_path / "x.npz", option, tmp_path / name]
        status, _, err = main("train", *TINY, "-n", 3, "--data", data, *args, capsys=capsys)
        assert status == 2
        assert "exists and is not a file deepnet wrote" in one_error(err) and name in err
    assert snapshot(tmp_path) == before
    status, _, err = main("train", *TINY, "-n", 3, "--data", data, "--out", tmp_path / "x.npz",
                          "--plot", "/dev/null", capsys=capsys)  # fmt: skip
    assert status == 2 and "/dev/null is a character device, not a regular file" in one_error(err)
    # deepnet's own model and cost curve (marked PNG) are replaced, and the model's replacing
    # is said; a second run over the first is fine
    out = tmp_path / "m.npz"
    for _ in range(2):
        status, stdout, err = main("train", *TINY, "-n", 3, "--data", data, "--out", out,
                                   capsys=capsys)  # fmt: skip
        assert status == 0, err
    assert f"replacing the deepnet model {out} (--out)" in stdout
    assert stdout.count("replacing") == 1


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("", "--out is empty; give a file name"),
        ("dir/", "--out dir/ names a folder; give a file name inside it, e.g. dir/model.npz"),
        ("dir", "--out dir is a folder; give a file name inside it"),
        ("notes.txt/m.npz", "--out notes.txt/m.npz: notes.txt is a file, not a folder"),
        ("fifo", "--out fifo is a FIFO (named pipe), not a regular file"),
    ],
)  # fmt: skip
def test_output_names_get_their_real_cause(out, message, data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("dir").mkdir()
    Path("notes.txt").write_text("hi\n")
    os.mkfifo("fifo")
    before = snapshot(tmp_path)
    no_data_loaded(monkeypatch)
    status, _, err = main("train", *TINY, "--data", data, "--out", out, capsys=capsys)
    assert status == 2 and message in one_error(err)
    assert snapshot(tmp_path) == before  # `--out dir/` never writes a file named dir


def test_make_data_writes_only_new_file_paths(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("dir").mkdir()
    Path("notes.txt").write_text("hi\n")
    before = snapshot(tmp_path)
    for path, message in [("", "make-data PATH is empty"), ("dir/", "dir/ is a folder"),
                          ("dir", "dir is a folder"), ("notes.txt", "notes.txt exists"),
                          ("notes.txt/big.h5", "notes.txt is a file, not a folder")]:  # fmt: skip
        status, _, err = main("make-data", path, "--n", 4, capsys=capsys)
        assert status == 2 and message in one_error(err), err
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# checkpoints: redirection, sharing, leftovers, a full disk


def test_a_checkpoint_does_not_decide_where_its_resumed_run_writes(
    data, tmp_path, monkeypatch, capsys
):
    checkpoint = stopped_run(tmp_path, data, monkeypatch, capsys)
    notes = tmp_path / "notes.txt"
    notes.write_text("the user's notes\n")
    point = load_checkpoint(checkpoint)
    recorded = dict(point.outputs)
    point.outputs["out"] = str(notes)  # edited to a user's file
    save_checkpoint(point, checkpoint)
    before = snapshot(tmp_path) | snapshot(data)
    status, _, err = main("train", "--resume", checkpoint, capsys=capsys)
    assert status == 2
    line = one_error(err)
    assert f"--out (from the checkpoint) {notes} exists and is not a file deepnet wrote" in line
    assert snapshot(tmp_path) | snapshot(data) == before
    point.outputs = {"out": str(tmp_path / "fine.npz"), "plot": str(data / FILES["train"])}
    save_checkpoint(point, checkpoint)
    status, _, err = main("train", "--resume", checkpoint, capsys=capsys)
    assert status == 2 and "--plot (from the checkpoint)" in one_error(err)
    assert "is the training data" in err
    # the command line decides: --out and --plot as typed, recorded paths ignored
    status, out, err = main("train", "--resume", checkpoint, "--out", tmp_path / "typed.npz",
                            capsys=capsys)  # fmt: skip
    assert status == 0, err
    assert load_model(tmp_path / "typed.npz").costs[:3] == point.costs
    assert (tmp_path / "typed-costs.png").is_file() and not (tmp_path / "fine.npz").exists()
    assert notes.read_text() == "the user's notes\n" and not checkpoint.exists()
    assert recorded["out"] == str(tmp_path / "m.npz")  # what it had recorded: a default only


def test_two_runs_cannot_share_a_checkpoint(data, tmp_path, env):
    """Run A trains; run B, fresh or resuming on A's checkpoint, is refused naming A; A's
    checkpoint survives B, A's stop and A's resume finishes the run (real processes)."""
    args = ["train", *TINY, "--data", data, "--out", "m.npz"]
    a = subprocess.Popen(
        [sys.executable, "-m", "deepnet.cli", *map(str, args), "-n", str(10**7),
         "--checkpoint-every", "1000"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "m.ckpt.npz").exists():
            assert a.poll() is None and time.monotonic() < deadline, a.communicate(timeout=10)
            time.sleep(0.01)
        for other in (["-n", 100], ["--resume"], ["--resume", "m.ckpt.npz", "--out", "b.npz"]):
            b = run(*args, *other, env=env, cwd=tmp_path)
            assert b.returncode == 1
            line = one_error(b.stderr)
            assert "m.ckpt.npz is in use by another deepnet run (pid" in line
            assert f"pid {a.pid} " in line
        assert a.poll() is None  # A never noticed
        a.send_signal(signal.SIGTERM)
        _, err = a.communicate(timeout=60)
        assert a.returncode == 128 + signal.SIGTERM, err
    finally:
        if a.poll() is None:
            a.kill()
            a.communicate(timeout=30)
    assert load_checkpoint(tmp_path / "m.ckpt.npz").iteration >= 1000  # A's, intact
    assert not (tmp_path / "m.ckpt.npz.lock").exists()  # released when A ended
    after = run(*args, "-n", 100, env=env, cwd=tmp_path)  # no longer in use: still A's run
    assert after.returncode == 2 and "holds an unfinished run" in one_error(after.stderr)


def test_kill_9_during_a_checkpoint_write_leaves_nothing_after_the_next_run(data, tmp_path, env):
    """``kill -9`` mid-run, several times, at random moments (checkpoints every iteration on a
    network with 2.5 MB of parameters, so many kills land inside a write); plus a forged
    leftover of a dead writer. The next run removes every temporary of its outputs."""
    rng = np.random.RandomState(0)
    args = ["train", "--layers", "12288,100,1", "--record-every", "1", "--print-every", "0",
            "--no-progress", "--data", data, "--checkpoint-every", "1", "-n", "400"]  # fmt: skip
    left_by_kills = 0
    for _ in range(6):
        for stale in tmp_path.glob(".*.tmp"):
            stale.unlink()
        (tmp_path / "m.ckpt.npz").unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "deepnet.cli", *map(str, args), "--out", "m.npz"],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not (tmp_path / "m.ckpt.npz").exists() and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            proc.kill()
            proc.wait(timeout=30)
        left_by_kills = len(list(tmp_path.glob(".m.ckpt.npz.*.tmp")))
        if left_by_kills:
            break
    # and a leftover of a writer that is certainly dead (its pid has exited), in case no
    # kill landed inside a write
    dead = subprocess.Popen(["true"])
    dead.wait(timeout=30)
    name = re.sub(r"-\d+\.", f"-{dead.pid}.", fileio.temporary_name(tmp_path / "m.npz"), count=1)
    (tmp_path / name).write_bytes(b"\0" * 2048)
    assert (tmp_path / "m.ckpt.npz").exists() and len(list(tmp_path.glob(".*.tmp"))) >= 1
    resumed = run("train", "--resume", "m.ckpt.npz", "--checkpoint-every", 1000, env=env,
                  cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert not list(tmp_path.glob(".*.tmp")), sorted(os.listdir(tmp_path))
    assert load_model(tmp_path / "m.npz").costs


def _fill_disk(monkeypatch, full) -> None:
    """Inject ENOSPC: the fsync of a temporary (``.<target>.<host>-<pid>.<random>.tmp``)
    fails when ``full(its name without the leading dot)`` says so."""
    real = os.fsync

    def fsync(fd: int) -> None:
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.endswith(".tmp") and full(name[1:]):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(fileio.os, "fsync", fsync)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_disk_full(data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["train", *TINY, "-n", 30, "--data", data, "--checkpoint-every", 10]
    # periodic checkpoints fail: warned, training goes on, the model is written
    with monkeypatch.context() as patch:
        _fill_disk(patch, lambda name: name.startswith("m.ckpt.npz."))
        status, out, err = main(*args, "--out", "m.npz", capsys=capsys)
    assert status == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("deepnet: warning:")]
    assert len(warnings) == 4 and all("no space left on device" in w.lower() for w in warnings)
    assert "could not write the checkpoint at iteration 10" in warnings[0]
    assert load_model("m.npz").costs and not list(tmp_path.glob(".*.tmp"))
    # the model cannot be written: the path, the cause, and where the finished run is safe
    with monkeypatch.context() as patch:
        _fill_disk(patch, lambda name: name.startswith("n.npz."))
        status, out, err = main(*args, "--out", "n.npz", capsys=capsys)
    assert status == 1
    line = one_error(err)
    assert f"cannot write {tmp_path / 'n.npz'}: no space left on device" in line
    assert "the finished run is safe in n.ckpt.npz: deepnet train --resume n.ckpt.npz" in line
    assert load_checkpoint("n.ckpt.npz").iteration == 30 and not Path("n.npz").exists()
    status, out, err = main("train", "--resume", "n.ckpt.npz", capsys=capsys)
    assert status == 0 and load_model("n.npz").costs == load_model("m.npz").costs
    # everything is full from iteration 20 on: the hint names the last saved iteration
    with monkeypatch.context() as patch:
        seen = []

        def full(name: str) -> bool:
            seen.append(name)
            return len(seen) > 2

        _fill_disk(patch, full)
        status, out, err = main(*args, "--out", "k.npz", capsys=capsys)
    assert status == 1
    assert "the run up to iteration 20 is safe in k.ckpt.npz" in err.splitlines()[-1]


# ---------------------------------------------------------------------------------------------
# hangs: MPI agreement, FIFOs


def test_an_error_on_rank_0_reaches_every_rank(tmp_path, env):
    (tmp_path / "x.npz").mkdir()
    started = time.monotonic()
    proc = subprocess.run(
        [mpiexec(), "-n", "2", sys.executable, "-m", "deepnet.cli", "train", "--distributed",
         "--synthetic", *TINY, "-n", "3", "--out", "x.npz"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("deepnet: error:")]
    assert errors == ["deepnet: error: --out x.npz is a folder; give a file name inside it, "
                      "e.g. x.npz/model.npz"], proc.stderr  # fmt: skip
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 120


def test_fifos_are_never_opened(model, data, tmp_path, env):
    """A FIFO as a picture, a model, a data file, $DEEPNET_DATA's file, a streamed file or an
    output: a one-line error, at once (a blocking open would hit the timeout)."""
    os.mkfifo(tmp_path / "f.png")
    fifo_data = tmp_path / "fifo-data"
    fifo_data.mkdir()
    os.symlink(data / FILES["test"], fifo_data / FILES["test"])
    os.mkfifo(fifo_data / FILES["train"])
    os.mkfifo(tmp_path / "f.h5")
    cases = [
        (["predict", model, "f.png"], "f.png: a FIFO (named pipe), not a regular file"),
        (["predict", "f.png", "f.png"], "f.png: not a regular file"),
        (["evaluate", "f.png"], "f.png: not a regular file"),
        (["train", *TINY, "--data", fifo_data], "train_catvnoncat.h5 is a FIFO (named pipe)"),
        (["evaluate", model, "--data", fifo_data], "train_catvnoncat.h5 is a FIFO"),
        (["train", *TINY, "--stream", "f.h5"], "f.h5 is a FIFO (named pipe)"),
        (["train", *TINY, "--data", data, "--out", "f.png"], "--out f.png is a FIFO"),
    ]
    for args, message in cases:
        result = run(*args, env=env, cwd=tmp_path, timeout=60)
        assert result.returncode == 2, (args, result.stderr)
        assert message in one_error(result.stderr), args
    with_env = run("train", *TINY, env=env | {"DEEPNET_DATA": str(fifo_data)}, cwd=tmp_path)
    assert "train_catvnoncat.h5 is a FIFO" in one_error(with_env.stderr)


# ---------------------------------------------------------------------------------------------
# tracebacks and unclear messages


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--out", ""], "--out is empty"),
        (["--layers", "12288,10**30,1"], "--layers takes comma-separated sizes"),
        (["--layers", f"12288,{10**30},1"], "GiB of float64 parameters, more than deepnet trains"),
        (["--layers", "12288,100000,1", "--dtype", "float32"], "4.58 GiB of float32 parameters"),
        (["--layers", "12288,4,2"], "must start with 12288 (64x64x3 inputs per picture) and end "),
    ],
)
def test_train_refuses_before_loading_anything(options, message, monkeypatch, capsys):
    no_data_loaded(monkeypatch)
    status, _, err = main("train", *options, capsys=capsys)
    assert status == 2 and message in one_error(err)


def test_a_checkpoint_with_non_finite_costs_is_refused(data, tmp_path, monkeypatch, capsys):
    checkpoint = stopped_run(tmp_path, data, monkeypatch, capsys)
    for bad in (float("nan"), float("inf")):
        edit_meta(checkpoint, lambda meta, bad=bad: meta["costs"].__setitem__(1, bad))
        status, _, err = main("train", "--resume", checkpoint, capsys=capsys)
        assert status == 2
        line = one_error(err)
        assert line.startswith(f"deepnet: error: {checkpoint}: ")
        assert ("NaN" if bad != bad else "Infinity") in line


def test_the_api_refuses_what_the_command_refuses():
    rng = np.random.RandomState(0)
    X, Y = rng.rand(4, 6), (np.arange(6) % 2)[None, :].astype(float)
    with pytest.raises(InputError, match="the output layer must have 1 unit"):
        L_layer_model(X, Y, [4, 3, 2], num_iterations=2)
    with pytest.raises(InputError, match="the output layer must have 1 unit"):
        two_layer_model(X, Y, (4, 3, 2), num_iterations=2)
    with pytest.raises(InputError, match="more than deepnet trains"):
        L_layer_model(X, Y, [4, 10**12, 1], num_iterations=2)
    # NumPy integers count as integers everywhere, as layer sizes always did
    dims = [np.int64(4), np.int32(3), np.int64(1)]
    _, costs = L_layer_model(X, Y, dims, num_iterations=np.int64(3), record_every=np.int64(1))
    _, same = L_layer_model(X, Y, [4, 3, 1], num_iterations=3, record_every=1)
    assert costs == same and len(costs) == 3
    _, costs = L_layer_model(X, Y, dims, num_iterations=np.int64(4), batch_size=np.int64(2),
                             record_every=np.uint8(2))  # fmt: skip
    assert len(costs) == 2
    with pytest.raises(InputError, match="num_iterations must be an integer"):
        L_layer_model(X, Y, dims, num_iterations=np.float64(3))
    with pytest.raises(InputError, match="num_iterations must be an integer"):
        L_layer_model(X, Y, dims, num_iterations=True)
    assert fit is not None


def test_class_names_never_reach_the_terminal_raw(model, data, tmp_path, env):
    image = tmp_path / "cat.png"
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 120, 40)).save(image)
    edit_meta(
        model, lambda meta: meta.__setitem__("classes", ["non-cat", "cat\x1b[2J\x1b]0;x\x07"])
    )
    for args in (["predict", model, image], ["evaluate", model, "--data", data]):
        result = run(*args, env=env, cwd=tmp_path)
        assert "\x1b" not in result.stdout + result.stderr and "\x07" not in result.stderr
        assert result.returncode == 2 and "\\x1b" in one_error(result.stderr)
    # a path with an escape code is shown escaped too
    odd = tmp_path / "odd\x1b[31m.png"
    result = run("predict", model.with_name("missing\x1b[2J.npz"), odd, env=env, cwd=tmp_path)
    assert "\x1b" not in result.stderr and "missing\\x1b[2J.npz" in result.stderr


def _deny(monkeypatch, *denied: Path) -> None:
    """Reading these paths fails with EACCES, as for a file without read permission (tests
    run as root in containers, where chmod does not stop reads)."""
    real = os.open
    blocked = {os.path.realpath(p) for p in denied}

    def guarded(path, flags, *args, **kwargs):
        if os.path.realpath(path) in blocked and not flags & (os.O_WRONLY | os.O_RDWR):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded)


def test_wrong_messages_now_name_the_real_cause(model, data, tmp_path, monkeypatch, capsys):
    # permission denied is said as such, not as a damaged file
    with monkeypatch.context() as patch:
        _deny(patch, model, data / FILES["train"])
        status, _, err = main("evaluate", model, "--data", data, capsys=capsys)
        assert status == 2 and f"{model}: permission denied" in one_error(err)
        status, _, err = main("train", *TINY, "--data", data, "--out", tmp_path / "p.npz",
                              capsys=capsys)  # fmt: skip
        assert status == 2
        assert f"{data / FILES['train']}: permission denied" in one_error(err)
        assert "damaged" not in err
    # a folder or a file where the data folder's files or the folder itself should be
    folder_data = tmp_path / "folder-data"
    (folder_data / FILES["train"]).mkdir(parents=True)
    os.symlink(data / FILES["test"], folder_data / FILES["test"])
    status, _, err = main("train", *TINY, "--data", folder_data, capsys=capsys)
    assert status == 2
    assert f"{folder_data / FILES['train']} is a folder; the training data must be a regular " in (
        one_error(err)
    )
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0::/root:/bin/sh\n")
    monkeypatch.setenv("DEEPNET_DATA", str(passwd))
    status, _, err = main("train", *TINY, capsys=capsys)
    assert status == 2
    assert f"DEEPNET_DATA {passwd} is a file, not a folder" in one_error(err)
    status, _, err = main("evaluate", model, capsys=capsys)
    assert status == 2 and "is a file, not a folder" in one_error(err)
    monkeypatch.setenv("DEEPNET_DATA", str(tmp_path / "nowhere"))
    status, _, err = main("train", *TINY, capsys=capsys)
    assert status == 2 and "does not exist" in one_error(err)


def test_a_refused_run_leaves_no_folder_and_no_lock(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEEPNET_DATA", str(tmp_path / "nowhere"))
    status, _, err = main("train", *TINY, "--out", "new/deeper/m.npz", capsys=capsys)
    assert status == 2 and "does not exist" in one_error(err)
    assert os.listdir(tmp_path) == []  # the lock's folders went with it
    status, _, err = main("train", "--resume", "--out", "", capsys=capsys)
    assert status == 2 and "--out is empty" in one_error(err)
