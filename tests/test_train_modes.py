"""``deepnet train --stream FILE`` and ``mpiexec -n 2 deepnet train --distributed``, through
the command line: each saves a model ``deepnet evaluate`` reads, stops cleanly on SIGINT,
and resumes to the uninterrupted run's parameters and costs, bit for bit."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_process import ENV, interrupt, run
from deepnet.checkpoint import load_checkpoint
from deepnet.model_io import load_model

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

COMMON = ["--layers", "12288,4,1", "--record-every", "10", "--print-every", "0"]
COMMON += ["--checkpoint-every", "20", "--no-progress"]


def mpiexec() -> str:
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec found: pip install mpich")
    return found


def deepnet(*args, ranks: int = 0) -> list[str]:
    cmd = [sys.executable, "-m", "deepnet.cli", *map(str, args)]
    return [mpiexec(), "-n", str(ranks), *cmd] if ranks else cmd


def same_run(a: Path, b: Path) -> None:
    ma, mb = load_model(a), load_model(b)
    assert ma.costs == mb.costs
    for key, value in mb.parameters.items():
        np.testing.assert_array_equal(ma.parameters[key], value, err_msg=key)


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param(["--batch-size", "16"], id="stream-minibatch"),
        pytest.param([], id="stream-full-batch"),
    ],
)
def test_streamed_run_saves_stops_and_resumes(tmp_path, mode):
    run(deepnet("make-data", "big.h5", "--n", 48), tmp_path)
    args = ["train", "--stream", "big.h5", *COMMON, *mode]
    run(deepnet(*args, "--epochs", 400, "--out", "ref.npz"), tmp_path)
    status, err = interrupt(deepnet(*args, "--epochs", 400, "--out", "run.npz"),
                            tmp_path / "run.ckpt.npz", tmp_path)  # fmt: skip
    assert status == 130, err
    assert "stopped by SIGINT" in err and "Traceback" not in err
    stopped_at = load_checkpoint(tmp_path / "run.ckpt.npz").iteration
    assert 20 <= stopped_at < 400
    out = run(deepnet("train", "--resume", "run.ckpt.npz"), tmp_path)
    assert f"at {'epoch' if mode else 'iteration'} {stopped_at}" in out.stdout
    same_run(tmp_path / "run.npz", tmp_path / "ref.npz")
    assert "train accuracy" in run(deepnet("evaluate", "run.npz", "--synthetic"), tmp_path).stdout


def test_distributed_run_saves_stops_and_resumes(tmp_path):
    args = ["train", "--distributed", "--synthetic", *COMMON, "-n", 600]
    run(deepnet(*args, "--out", "ref.npz", ranks=2), tmp_path)
    ref = load_model(tmp_path / "ref.npz")
    assert ref.training["ranks"] == 2
    status, err = interrupt(deepnet(*args, "--out", "run.npz", ranks=2),
                            tmp_path / "run.ckpt.npz", tmp_path)  # fmt: skip
    assert status == 130, err
    assert err.count("stopped by SIGINT") == 1 and "Traceback" not in err
    stopped_at = load_checkpoint(tmp_path / "run.ckpt.npz").iteration
    assert 20 <= stopped_at < 600
    run(deepnet("train", "--distributed", "--resume", "run.ckpt.npz", ranks=2), tmp_path)
    same_run(tmp_path / "run.npz", tmp_path / "ref.npz")
    assert "test accuracy" in run(deepnet("evaluate", "run.npz"), tmp_path).stdout


def test_distributed_errors_are_agreed_and_said_once(tmp_path):
    (tmp_path / "x.npz").mkdir()
    out = subprocess.run(
        deepnet("train", "--distributed", "--synthetic", "-n", 2, "--out", "x.npz", ranks=2),
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is a folder" in lines[0], out.stderr


def test_stream_options_are_checked(tmp_path):
    out = subprocess.run(deepnet("train", "--stream", "missing.h5", "-n", 1), cwd=tmp_path,
                         env=ENV, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2 and "not found" in out.stderr


def test_distributed_run_reads_shards_of_a_file(tmp_path):
    run(deepnet("make-data", "big.h5", "--n", 40), tmp_path)
    args = ["train", "--stream", "big.h5", *COMMON, "-n", 30]
    out = run(deepnet(*args, "--distributed", "--out", "d.npz", ranks=2), tmp_path)
    assert "each rank reading its shard" in out.stdout
    run(deepnet(*args, "--out", "s.npz"), tmp_path)  # one process, the file in chunks
    d, s = load_model(tmp_path / "d.npz"), load_model(tmp_path / "s.npz")
    assert d.training["ranks"] == 2
    np.testing.assert_allclose(d.costs, s.costs, rtol=1e-12)
    for key, value in s.parameters.items():
        np.testing.assert_allclose(d.parameters[key], value, rtol=1e-9, atol=1e-12)
