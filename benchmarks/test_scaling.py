"""Scaling measurements behind docs/scaling.md: MPI ranks, and training from a file.

pytest-benchmark (timings plus the per-step breakdown in ``extra_info``)::

    python -m pytest benchmarks/test_scaling.py --benchmark-only

The tables of docs/scaling.md (``--large`` adds the 20k / 200k-image memory rows, which
write 0.25 GB and 2.5 GB of synthetic data to a temporary folder)::

    python benchmarks/test_scaling.py [--large] [--ranks-only | --streaming-only]

Ranks run as ``mpiexec -n N python -m deepnet.distributed bench`` with one BLAS thread per
rank (the ranks are the parallelism), on a fixed total of examples (strong scaling). The
file-training runs also use one BLAS thread, leaving the other core to the read-ahead thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from deepnet.streaming import make_synthetic, train_stream

LAYERS = "12288,20,7,5,1"
BENCH_M = 2048  # examples over all ranks
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def mpiexec() -> str | None:
    """The mpiexec next to this Python (PyPI's mpich wheel), else none."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else None


def rank_bench(ranks: int, m: int = BENCH_M, iterations: int = 10, one_thread: bool = True) -> dict:
    """Rank 0's JSON report of ``python -m deepnet.distributed bench`` on ``ranks`` ranks.

    ``one_thread=False`` runs as a user would, no thread variables set: the thread policy
    (``deepnet.threads``), once plugged in, decides each rank's share.
    """
    launcher = mpiexec()
    if launcher is None:
        pytest.skip("mpiexec not found next to this Python: pip install -e '.[mpi]'")
    cmd = [launcher, "-n", str(ranks), sys.executable, "-m", "deepnet.distributed", "bench",
           "--m", str(m), "--layers", LAYERS, "--iterations", str(iterations)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ONE_THREAD}
    out = subprocess.run(
        cmd, capture_output=True, text=True, env={**env, **ONE_THREAD} if one_thread else env,
        check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return json.loads(out.stdout)


def stream_run(path: Path, *, batch_size: int, prefetch: bool, iterations: int = 1) -> dict:
    """Train from ``path`` in a fresh process; its JSON (speed, peak memory, costs)."""
    cmd = [sys.executable, "-m", "deepnet.streaming", "train", str(path), "--layers", LAYERS,
           "--batch-size", str(batch_size), "--iterations", str(iterations)]  # fmt: skip
    if not prefetch:
        cmd.append("--no-prefetch")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=_one_thread())
    return json.loads(out.stdout)


@pytest.mark.parametrize("threads", ["one-thread", "as-a-user"])
@pytest.mark.parametrize("ranks", [1, 2])
def test_data_parallel_step(benchmark, ranks, threads):
    """Wall time of a whole ``bench`` run; the per-step breakdown goes to extra_info."""
    # No group: the scaling suite's rows have a table of their own in benchmarks/report.py.
    benchmark.extra_info["threads"] = threads
    report = benchmark.pedantic(
        rank_bench, args=(ranks,), kwargs={"one_thread": threads == "one-thread"}, rounds=1,
        iterations=1,
    )  # fmt: skip
    benchmark.extra_info.update(report)
    assert report["ranks"] == ranks


@pytest.fixture(scope="module")
def stream_file(tmp_path_factory):
    """4096 synthetic course-size images (50 MB)."""
    return make_synthetic(tmp_path_factory.mktemp("scaling") / "s.h5", 4096)


@pytest.mark.parametrize("prefetch", [True, False], ids=["read-ahead", "inline"])
def test_stream_epoch(benchmark, stream_file, prefetch):
    """One epoch (16 batches of 256) of the L-layer network read from a file."""
    benchmark.pedantic(
        train_stream,
        args=(stream_file, [12288, 20, 7, 5, 1]),
        kwargs=dict(num_iterations=1, batch_size=256, prefetch=prefetch),
        rounds=3,
        iterations=1,
    )


IN_MEMORY = """
import json, sys, time, h5py
import numpy as np
from deepnet.initialization import draw_parameters
from deepnet.training import TrainState, fit, like, prepare
with h5py.File(sys.argv[1]) as f:
    x, y = f["train_set_x"][:], f["train_set_y"][:]
X, Y = prepare(x.reshape(len(x), -1).T / 255.0, y.reshape(1, -1), "cpu", "float64")
if sys.argv[3] == "C":  # the course's X is F-ordered; xp.take of its columns is slow
    X = np.ascontiguousarray(X)
state = TrainState(like(draw_parameters([12288, 20, 7, 5, 1], "lecun", 1), X))
t = time.perf_counter()
fit(X, Y, state, learning_rate=0.0075, num_iterations=1, batch_size=int(sys.argv[2]))
print(json.dumps({"examples_per_s": len(x) / (time.perf_counter() - t)}))
"""


def best(runs: int, measure, key: str = "examples_per_s") -> dict:
    """The run with the highest ``key`` among ``runs`` (the least disturbed by other load)."""
    return max((measure() for _ in range(runs)), key=lambda r: r[key])


def _ranks_table(runs: int) -> list[str]:
    rows = [best(runs, lambda n=n: rank_bench(n, iterations=20)) for n in (1, 2)]
    base, base_min = rows[0]["examples_per_s"], rows[0]["min_examples_per_s"]
    lines = [
        "| ranks | examples per rank | compute ms/step | Allreduce ms/step | step ms/step "
        "| examples/s | speed-up | Allreduce payload | ring bytes sent per rank "
        "| comm/compute |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t, f = r["seconds_per_step"], r["min_seconds_per_step"]
        lines.append(
            f"| {r['ranks']} | {r['m'] // r['ranks']} "
            f"| {1e3 * t['compute']:.1f} ({1e3 * f['compute']:.1f}) "
            f"| {1e3 * t['reduce']:.2f} ({1e3 * f['reduce']:.2f}) "
            f"| {1e3 * t['step']:.1f} ({1e3 * f['step']:.1f}) "
            f"| {r['examples_per_s']:.0f} ({r['min_examples_per_s']:.0f}) "
            f"| {r['examples_per_s'] / base:.2f} ({r['min_examples_per_s'] / base_min:.2f}) "
            f"| {r['allreduce_payload_bytes']:,} B | {r['ring_bytes_sent_per_rank']:,} B "
            f"| {r['comm_to_compute']:.3f} ({f['reduce'] / f['compute']:.3f}) |"
        )
    r = rows[-1]
    lines.append(f"\nMean over 20 steps (fastest step in brackets); {r['mpi']}; {r['dtype']}; "
                 f"reduce={r['reduce']}; BLAS threads per rank: {r['threads_per_rank']}; "
                 f"best of {runs} runs.")  # fmt: skip
    return lines


def _in_memory(path: Path, batch: int, order: str) -> dict:
    cmd = [sys.executable, "-c", IN_MEMORY, str(path), str(batch), order]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=_one_thread())
    return json.loads(out.stdout)


def _one_thread() -> dict:
    return {**os.environ, **ONE_THREAD}


def _stream_tables(large: bool, runs: int) -> list[str]:
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        path = make_synthetic(Path(tmp) / "s.h5", 8192).path
        lines += ["| batch | bytes read per step | file, read-ahead | file, inline "
                  "| in memory, fit on the course's X (F order) | in memory, X in C order |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for batch in (64, 256):
            ahead = best(runs, lambda b=batch: stream_run(path, batch_size=b, prefetch=True))
            inline = best(runs, lambda b=batch: stream_run(path, batch_size=b, prefetch=False))
            f_order = _in_memory(path, batch, "F")  # slow: once is enough
            c_order = best(runs, lambda b=batch: _in_memory(path, b, "C"))
            lines.append(
                f"| {batch} | {batch * 12288:,} B | {ahead['examples_per_s']:.0f} /s "
                f"| {inline['examples_per_s']:.0f} /s | {f_order['examples_per_s']:.0f} /s "
                f"| {c_order['examples_per_s']:.0f} /s |"
            )
        sizes = (20_000, 200_000) if large else (2_000, 8_192)
        lines += ["", "| images | file | peak resident memory (VmHWM) | examples/s |",
                  "|---|---|---|---|"]  # fmt: skip
        for n in sizes:
            p = Path(tmp) / f"m{n}.h5"
            make_synthetic(p, n)
            r = stream_run(p, batch_size=64, prefetch=True)
            lines.append(
                f"| {n:,} | {r['file_bytes'] / 1e9:.2f} GB | {r['peak_rss_bytes'] / 2**20:.0f} MiB "
                f"| {r['examples_per_s']:.0f} |"
            )
            p.unlink()
    return lines


if __name__ == "__main__":
    runs = 3
    print(f"load average before: {os.getloadavg()}", flush=True)
    if "--streaming-only" not in sys.argv:
        print("\n".join(_ranks_table(runs)), flush=True)
        print()
    if "--ranks-only" not in sys.argv:
        print("\n".join(_stream_tables(large="--large" in sys.argv, runs=runs)))
    print(f"load average after: {os.getloadavg()}")
