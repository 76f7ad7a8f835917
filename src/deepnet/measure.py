"""Measuring tools behind ``python -m deepnet.streaming`` and ``python -m deepnet.distributed``.

They print JSON for benchmarks and scaling studies: a streamed run's costs, speed and peak
memory; an MPI run's costs and parameters; the compute and Allreduce time of an MPI step.
Training for use goes through ``deepnet train`` (``--stream FILE``, ``--distributed``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepnet import backend
from deepnet.allreduce import REDUCE_METHODS, Allreduce, bind_gpu
from deepnet.backend import array_namespace, to_numpy
from deepnet.constants import DEFAULT_LAYERS
from deepnet.distributed import (
    _flatten,
    _unflatten,
    is_root,
    mpi,
    shard_bounds,
    train_distributed,
    world,
)
from deepnet.errors import DeepnetError, InputError
from deepnet.gradients import apply_gradients, grad_keys, gradients
from deepnet.hdf5_rows import open_course_file
from deepnet.initialization import check_layer_dims, draw_parameters, place
from deepnet.kernels import num_layers
from deepnet.settings import parse_layers as _parse_layers
from deepnet.streaming import make_synthetic, train_stream
from deepnet.training import DTYPES, prepare

STREAM_DOC = "Train from a course-layout HDF5 file read as needed; print costs, speed, memory."
MPI_DOC = "Full-batch training or a step benchmark, data-parallel over MPI ranks (mpiexec)."


def parse_layers(text: str) -> list[int]:
    """``"12288,20,7,5,1"`` -> [12288, 20, 7, 5, 1] (an argparse type)."""
    try:
        return _parse_layers(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM on Linux, ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource  # POSIX only; Linux answered above

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def stream_main(argv: Sequence[str] | None = None) -> int:
    """``make-synthetic PATH --n N`` or ``train PATH ...`` (prints JSON); returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m deepnet.streaming", description=STREAM_DOC)
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make-synthetic", help="write a large file in the course's layout")
    make.add_argument("path")
    make.add_argument("--n", type=int, default=200_000, help="number of images (200000)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--prefix", default="train", help="dataset names PREFIX_set_x/y")
    train = sub.add_parser("train", help="train from a file, print costs/speed/memory as JSON")
    train.add_argument("path")
    train.add_argument("--layers", type=parse_layers, default=[12288, 20, 7, 5, 1])
    train.add_argument("--batch-size", type=int, default=64, help="0 means full batch")
    train.add_argument("--iterations", type=int, default=1)
    train.add_argument("--learning-rate", type=float, default=0.0075)
    train.add_argument("--record-every", type=int, default=1)
    train.add_argument("--seed", type=int, default=1)
    train.add_argument("--device", default=None)
    train.add_argument("--dtype", default="float64", choices=DTYPES)
    train.add_argument("--no-prefetch", action="store_true", help="read each batch when needed")
    args = parser.parse_args(argv)
    try:
        return _stream_run(args)
    except DeepnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _stream_run(args: argparse.Namespace) -> int:
    if args.command == "make-synthetic":
        info = make_synthetic(args.path, args.n, seed=args.seed, prefix=args.prefix)
        print(json.dumps({"path": str(info.path), "m": info.m, "bytes": info.path.stat().st_size}))
        return 0
    source = open_course_file(args.path)
    start = time.perf_counter()
    _, costs = train_stream(
        source, args.layers, learning_rate=args.learning_rate, num_iterations=args.iterations,
        batch_size=args.batch_size or None, seed=args.seed, device=args.device,
        dtype=args.dtype, record_every=args.record_every, prefetch=not args.no_prefetch,
    )  # fmt: skip
    backend.synchronize(args.device)
    seconds = time.perf_counter() - start
    report = {
        "m": source.m,
        "file_bytes": source.path.stat().st_size,
        "costs": costs,
        "seconds": seconds,
        "examples_per_s": source.m * args.iterations / seconds,
        "peak_rss_bytes": peak_rss_bytes(),
    }
    print(json.dumps(report))
    return 0


# --------------------------------------------------------------------------- measuring


def benchmark(
    comm: Any,
    *,
    m: int = 2048,
    layers_dims: Sequence[int] = DEFAULT_LAYERS,
    iterations: int = 10,
    warmup: int = 2,
    device: str | None = None,
    dtype: str = "float64",
    reduce: str = "auto",
) -> dict[str, Any]:
    """Time the parts of a data-parallel step on synthetic data: the same on every rank.

    The ``m`` examples are split over the ranks (strong scaling). Each step's time is its
    slowest rank's; reported are the mean and the minimum over the timed steps of
    ``compute`` (gradients of the shard), ``reduce`` (the Allreduce of gradients and cost)
    and ``step`` (a whole step, update included).
    """
    dims = check_layer_dims(layers_dims)
    device = backend.resolve_device(device)
    if device == "cuda":
        bind_gpu(comm)
    rank, size = comm.Get_rank(), comm.Get_size()
    start, stop = shard_bounds(m, rank, size)
    rng = np.random.default_rng([rank, size])
    Y = (rng.random((1, stop - start)) < 0.5).astype(np.float64)
    X = (rng.integers(0, 192, (dims[0], stop - start)) + 64 * Y) / 255.0
    X, Y = prepare(X, Y, device, dtype)
    xp = array_namespace(X)
    params = place(draw_parameters(dims, "lecun", 1), device, dtype)
    keys = grad_keys(num_layers(params))
    shapes = {k: tuple(params[k[1:]].shape) for k in keys}
    reducer = Allreduce(comm, X, reduce)
    times = np.zeros((3, iterations))  # compute, reduce, step; one column per timed step
    for i in range(warmup + iterations):
        comm.Barrier()
        t0 = time.perf_counter()
        grads, cost = gradients(params, X, Y, m_total=m)
        flat = _flatten(xp, grads, cost, keys)
        backend.synchronize(device)
        t1 = time.perf_counter()
        flat = reducer(flat)
        backend.synchronize(device)
        t2 = time.perf_counter()
        grads, cost = _unflatten(xp, flat, shapes)
        params = apply_gradients(params, grads, 0.0075)
        float(cost)
        t3 = time.perf_counter()
        if i >= warmup:
            times[:, i - warmup] = (t1 - t0, t2 - t1, t3 - t0)
    MPI = mpi()
    comm.Allreduce(MPI.IN_PLACE, times, op=MPI.MAX)  # each step waits for its slowest rank
    names = ("compute", "reduce", "step")
    mean = dict(zip(names, times.mean(axis=1).tolist(), strict=True))
    fastest = dict(zip(names, times.min(axis=1).tolist(), strict=True))
    payload = int(flat.size) * flat.dtype.itemsize
    return {
        "ranks": size,
        "m": m,
        "layers_dims": dims,
        "device": device,
        "dtype": dtype,
        "reduce": reducer.method,
        "seconds_per_step": mean,
        "examples_per_s": m / mean["step"],
        # The least disturbed step: what the hardware can do when nothing else runs.
        "min_seconds_per_step": fastest,
        "min_examples_per_s": m / fastest["step"],
        "allreduce_payload_bytes": payload,
        # A ring (bandwidth-optimal) allreduce sends and receives 2 (p-1)/p of the buffer.
        "ring_bytes_sent_per_rank": int(2 * (size - 1) / size * payload),
        "comm_to_compute": mean["reduce"] / mean["compute"],
        "mpi": MPI.Get_library_version().splitlines()[0].strip(),
        "threads_per_rank": os.environ.get("OMP_NUM_THREADS", "default"),
    }


# --------------------------------------------------------------------------- command line


def _default_data() -> str | None:
    root = os.environ.get("DEEPNET_DATA")
    return str(Path(root) / "train_catvnoncat.h5") if root else None


def mpi_main(argv: Sequence[str] | None = None) -> int:
    """``train`` or ``bench`` under mpiexec; rank 0 prints. Returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m deepnet.distributed", description=MPI_DOC)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="full-batch training, data-parallel over the ranks")
    train.add_argument("--data", default=_default_data(), help="course-layout HDF5 file "
                       "(default: $DEEPNET_DATA/train_catvnoncat.h5)")  # fmt: skip
    train.add_argument("--layers", type=parse_layers, default=[12288, 20, 7, 5, 1])
    train.add_argument("--learning-rate", type=float, default=0.0075)
    train.add_argument("--iterations", type=int, default=2500)
    train.add_argument("--record-every", type=int, default=100)
    train.add_argument("--init", default="lecun", choices=("lecun", "small"))
    train.add_argument("--seed", type=int, default=1)
    train.add_argument("--device", default=None)
    train.add_argument("--dtype", default="float64", choices=DTYPES)
    train.add_argument("--reduce", default="auto", choices=REDUCE_METHODS)
    train.add_argument("--costs-json", help="rank 0 writes the cost history here")
    train.add_argument("--params-npz", help="rank 0 writes the parameters here")
    train.add_argument("--quiet", action="store_true", help="do not print the costs")
    bench = sub.add_parser("bench", help="time compute and Allreduce per step; JSON on rank 0")
    bench.add_argument("--m", type=int, default=2048, help="examples over all ranks")
    bench.add_argument("--layers", type=parse_layers, default=[12288, 20, 7, 5, 1])
    bench.add_argument("--iterations", type=int, default=10)
    bench.add_argument("--device", default=None)
    bench.add_argument("--dtype", default="float64", choices=DTYPES)
    bench.add_argument("--reduce", default="auto", choices=REDUCE_METHODS)
    args = parser.parse_args(argv)
    try:
        comm = world()
        if args.command == "bench":
            report = benchmark(
                comm, m=args.m, layers_dims=args.layers, iterations=args.iterations,
                device=args.device, dtype=args.dtype, reduce=args.reduce,
            )  # fmt: skip
            if is_root(comm):
                print(json.dumps(report))
            return 0
        if args.data is None:
            raise InputError("no data: pass --data FILE or set DEEPNET_DATA")
        params, costs = train_distributed(
            args.data, args.layers, comm=comm, learning_rate=args.learning_rate,
            num_iterations=args.iterations, init=args.init, seed=args.seed,
            device=args.device, dtype=args.dtype, record_every=args.record_every,
            print_cost=not args.quiet, reduce=args.reduce,
        )  # fmt: skip
    except DeepnetError as exc:  # raised alike on every rank (see distributed.agree): say it once
        if _rank_or_zero() == 0:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    if is_root(comm):
        if args.costs_json:
            Path(args.costs_json).write_text(json.dumps({"ranks": comm.Get_size(), "costs": costs}))
        if args.params_npz:
            np.savez(args.params_npz, **{k: to_numpy(v) for k, v in params.items()})
    return 0


def _rank_or_zero() -> int:
    try:
        return mpi().COMM_WORLD.Get_rank()
    except DeepnetError:
        return 0


def mpi_main_or_abort() -> int:
    """mpi_main(), but an unexpected error on one rank ends all of them instead of a hang."""
    try:
        return mpi_main()
    except Exception:
        import traceback

        traceback.print_exc()
        comm = mpi().COMM_WORLD
        if comm.Get_size() > 1:
            comm.Abort(1)
        return 1
