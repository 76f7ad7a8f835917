"""Data-parallel training: the shards' gradients add up to full batch, over real MPI ranks too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_process import mpiexec
from deepnet.distributed import (
    DistributedError,
    _check_launch,
    agree,
    check_identical,
    fit_distributed,
    load_shard,
    shard_bounds,
)
from deepnet.errors import InputError
from deepnet.gradients import add_gradients, apply_gradients, gradients
from deepnet.hdf5_rows import open_course_file
from deepnet.initialization import draw_parameters
from deepnet.streaming import make_synthetic
from deepnet.training import L_layer_model, TrainState, fit, like, train_step, two_layer_model

ATOL = 1e-9  # the bar for the distributed cost history (float64)


def data(xp_backend, m=37, n_x=20, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.rand(n_x, m)
    Y = (rng.rand(1, m) < 0.5).astype(float)
    return xp_backend.asarray(X), xp_backend.asarray(Y)


def test_gradients_then_update_is_train_step(backend, host, monkeypatch):
    if backend.name == "cupy":  # like with like: the generic step, not the fused CUDA one
        monkeypatch.setenv("DEEPNET_CUDA_FAST", "0")
    X, Y = data(backend)
    params = {k: backend.asarray(v) for k, v in draw_parameters([20, 5, 3, 1], "lecun", 2).items()}
    want, want_cost = train_step(params, X, Y, 0.1)
    grads, cost = gradients(params, X, Y)
    got = apply_gradients(params, grads, 0.1)
    assert list(got) == list(want)
    for key in want:
        if key == "W1":  # train_step scales the small factor: (lr * G1) @ X.T, same to rounding
            np.testing.assert_allclose(host(got[key]), host(want[key]), rtol=1e-14, atol=1e-15)
        else:
            np.testing.assert_array_equal(host(got[key]), host(want[key]))
    assert float(cost) == float(want_cost)


def test_shard_gradients_add_up_to_the_full_batch(backend, host):
    X, Y = data(backend, m=41)
    params = {k: backend.asarray(v) for k, v in draw_parameters([20, 5, 3, 1], "lecun", 2).items()}
    full, full_cost = gradients(params, X, Y)
    total, cost = None, 0.0
    for start, stop in (shard_bounds(41, r, 3) for r in range(3)):
        g, c = gradients(params, X[:, start:stop], Y[:, start:stop], m_total=41)
        total, cost = add_gradients(total, g), cost + c
    for key in full:
        np.testing.assert_allclose(host(total[key]), host(full[key]), rtol=0, atol=1e-15)
    assert float(cost) == pytest.approx(float(full_cost), abs=1e-15)


def test_shards_cover_every_example_once():
    for m, size in [(209, 2), (10, 3), (2, 4), (7, 7)]:
        bounds = [shard_bounds(m, r, size) for r in range(size)]
        assert bounds[0][0] == 0 and bounds[-1][1] == m
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
        assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1
    with pytest.raises(InputError):
        shard_bounds(10, 2, 2)


@pytest.mark.parametrize("gram", [False, True])
def test_one_process_without_mpi_is_full_batch_fit(gram):
    rng = np.random.RandomState(1)
    X, Y = rng.rand(30, 25), (rng.rand(1, 25) < 0.5).astype(float)
    start = like(draw_parameters([30, 4, 1], "lecun", 1), X)
    kw = dict(learning_rate=0.05, num_iterations=7, record_every=2)
    want = fit(X, Y, TrainState(start), **kw, gram=gram)
    got = fit_distributed(X, Y, TrainState(dict(start)), comm=None, **kw)
    np.testing.assert_allclose(got.costs, want.costs, rtol=1e-14)
    assert got.iteration == want.iteration
    for key in start:  # the same steps, summed in another order: equal to rounding
        got_p, want_p = got.parameters[key], want.parameters[key]
        np.testing.assert_allclose(got_p, want_p, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("reg", [(0.8, 1.0), (0.5, 0.75)], ids=["l2", "l2-dropout"])
def test_one_process_with_l2_and_dropout_is_fit_with_them(reg):
    rng = np.random.RandomState(2)
    X, Y = rng.rand(30, 25), (rng.rand(1, 25) < 0.5).astype(float)
    start = like(draw_parameters([30, 4, 3, 1], "lecun", 1), X)
    kw = dict(learning_rate=0.05, num_iterations=9, record_every=1, lambd=reg[0],
              keep_prob=reg[1], seed=6)  # fmt: skip
    want = fit(X, Y, TrainState(start), **kw, gram=False)
    got = fit_distributed(X, Y, TrainState(dict(start)), comm=None, **kw)
    plain = fit_distributed(X, Y, TrainState(dict(start)), comm=None, **{**kw, "lambd": 0.0})
    np.testing.assert_allclose(got.costs, want.costs, rtol=1e-14)
    assert got.costs[0] > plain.costs[0]  # the L2 term is in the cost
    for key in start:
        np.testing.assert_allclose(got.parameters[key], want.parameters[key], rtol=1e-12,
                                   atol=1e-15)  # fmt: skip
    with pytest.raises(InputError, match="lambd must be >= 0"):
        fit_distributed(X, Y, TrainState(dict(start)), comm=None, **{**kw, "lambd": -1})
    with pytest.raises(InputError, match="keep_prob must be in"):
        fit_distributed(X, Y, TrainState(dict(start)), comm=None, **{**kw, "keep_prob": 0})


class FakeComm:
    """Enough of an MPI communicator for the bookkeeping: ranks' answers are scripted."""

    def __init__(self, size=1, gathered=None):
        self.size, self.gathered = size, gathered

    def Get_size(self):
        return self.size

    def Get_rank(self):
        return 0

    def allgather(self, value):
        return [value] + list(self.gathered or [])


def test_a_launcher_mpi_mismatch_is_reported(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "4")
    with pytest.raises(DistributedError, match="different MPI libraries"):
        _check_launch(FakeComm(size=1))
    monkeypatch.setenv("PMI_SIZE", "1")
    _check_launch(FakeComm(size=1))


def test_parameters_that_differ_between_ranks_are_caught():
    params = {"W1": np.ones((2, 2)), "b1": np.zeros((2, 1))}
    with pytest.raises(DistributedError, match="differ between ranks"):
        check_identical(FakeComm(size=2, gathered=["not the same digest"]), params)


def test_a_failure_on_another_rank_fails_every_rank():
    with pytest.raises(DistributedError, match="rank 1"):
        agree(FakeComm(size=2, gathered=["DataError: no file"]), lambda: 1, "loading")


# --------------------------------------------------------------------------- real MPI ranks


def run_ranks(n: int, args: list[str], tmp_path: Path) -> dict:
    """``mpiexec -n n python -m deepnet.distributed train ...``; rank 0's costs and params."""
    costs, params = tmp_path / "costs.json", tmp_path / "params.npz"
    # One BLAS thread per rank: the ranks are the parallelism (and 2 ranks x N threads
    # on a small machine spin against each other).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}  # fmt: skip
    cmd = [mpiexec(), "-n", str(n), sys.executable, "-m", "deepnet.distributed", "train",
           *args, "--quiet", "--costs-json", str(costs), "--params-npz", str(params)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout}\n{out.stderr}"
    report = json.loads(costs.read_text())
    with np.load(params) as npz:
        report["parameters"] = dict(npz)
    return report


def test_two_ranks_reproduce_the_single_process_full_batch_history(tmp_path):
    # 101 examples: shards of 50 and 51; small pictures keep the arithmetic quick.
    source = make_synthetic(tmp_path / "syn.h5", 101, seed=4, image_shape=(16, 16, 3))
    dims = [768, 8, 4, 1]
    got = run_ranks(2, ["--data", str(source.path), "--layers", ",".join(map(str, dims)),
                        "--iterations", "40", "--record-every", "1", "--learning-rate", "0.05"],
                    tmp_path)  # fmt: skip
    X, Y = load_shard(source, 0, source.m)
    params, costs = L_layer_model(X, Y, dims, 0.05, 40, record_every=1)
    assert got["ranks"] == 2 and len(got["costs"]) == 40
    np.testing.assert_allclose(got["costs"], costs, rtol=0, atol=ATOL)
    assert got["costs"][-1] < got["costs"][0]  # it trained
    for key in params:
        np.testing.assert_allclose(got["parameters"][key], params[key], rtol=0, atol=ATOL)


ARRAYS_SCRIPT = """
import json, sys
from deepnet.distributed import is_root, load_shard, train_distributed
from deepnet.hdf5_rows import open_course_file
source = open_course_file(sys.argv[1])
X, Y = load_shard(source, 0, source.m)  # every rank loads the whole (small) set
seen = []
_, costs = train_distributed((X, Y), [768, 5, 1], learning_rate=0.05, num_iterations=12,
                             init="small", record_every=3, callback=lambda s, c: seen.append(c))
assert seen == costs
if is_root():
    print(json.dumps(costs))
"""


def test_two_ranks_from_arrays_in_memory(tmp_path):
    """The call the CLI makes: the whole set in memory on every rank, each keeps a shard."""
    source = make_synthetic(tmp_path / "syn.h5", 33, seed=5, image_shape=(16, 16, 3))
    script = tmp_path / "arrays.py"
    script.write_text(ARRAYS_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [mpiexec(), "-n", "2", sys.executable, str(script), str(source.path)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    X, Y = load_shard(source, 0, source.m)
    _, want = two_layer_model(X, Y, [768, 5, 1], 0.05, 12, record_every=3)
    got = json.loads(out.stdout)  # printed by rank 0 only
    assert len(want) == 4  # iterations 0, 3, 6, 9
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


def test_two_ranks_on_the_real_data(real_data_dir, tmp_path):
    path = real_data_dir / "train_catvnoncat.h5"
    got = run_ranks(2, ["--data", str(path), "--iterations", "101", "--record-every", "1"],
                    tmp_path)  # fmt: skip
    X, Y = load_shard(open_course_file(path), 0, 209)
    _, costs = L_layer_model(X, Y, [12288, 20, 7, 5, 1], num_iterations=101, record_every=1)
    np.testing.assert_allclose(got["costs"], costs, rtol=0, atol=ATOL)
    # The course's table (6 printed digits): cost at 0 and at 100.
    assert got["costs"][0] == pytest.approx(0.771749, abs=5e-7)
    assert got["costs"][100] == pytest.approx(0.672053, abs=5e-7)


@pytest.mark.parametrize(
    "extra", [[], ["--lambd", "0.7", "--keep-prob", "0.8"]], ids=["plain", "l2-dropout"]
)
def test_deepnet_train_distributed_matches_one_process(tmp_path, extra):
    """The user's command, ``mpiexec -n 2 deepnet train --distributed``, as a subprocess
    (with L2, added once to the summed gradients, and dropout, each rank its shard's columns
    of the full batch's masks: as the in-memory run)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}  # fmt: skip
    common = ["train", "--synthetic", "--layers", "12288,4,1", "--iterations", "21",
              "--record-every", "10", "--print-every", "10", "--no-progress", *extra]  # fmt: skip
    cli = [sys.executable, "-m", "deepnet"]
    two = subprocess.run(
        [mpiexec(), "-n", "2", *cli, *common, "--distributed", "--out", str(tmp_path / "d.npz")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    assert "2 MPI ranks" in two.stdout and two.stdout.count("saved the model") == 1
    one = subprocess.run(
        [*cli, *common, "--out", str(tmp_path / "s.npz")],
        capture_output=True, text=True, env=env, timeout=300, check=True,
    )  # fmt: skip
    cost_lines = [line for line in one.stdout.splitlines() if line.startswith("Cost after")]
    assert len(cost_lines) == 3
    got = [float(line.split(": ")[1]) for line in two.stdout.splitlines() if "Cost after" in line]
    want = [float(line.split(": ")[1]) for line in cost_lines]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=0)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--batch-size", "32"], "--distributed trains full batch"),
        (["--early-stopping"], "--early-stopping holds out examples of data in memory"),
    ],
    ids=["mini-batches", "early-stopping"],
)
def test_distributed_refuses_what_it_cannot_split(tmp_path, options, message):
    proc = subprocess.run(
        [sys.executable, "-m", "deepnet", "train", "--distributed", "--synthetic", *options,
         "--out", str(tmp_path / "m.npz")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2  # a usage error
    assert message in proc.stderr and "Traceback" not in proc.stderr
