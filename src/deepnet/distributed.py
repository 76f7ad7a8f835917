"""Data-parallel full-batch training over MPI (mpi4py): one process per CPU socket or GPU.

Each rank holds a contiguous shard of the examples (read from the file by that rank alone)
and the same parameters. Per iteration, every rank computes the gradient of the cost
*summed* over its shard and divided by the *global* number of examples
(:func:`deepnet.gradients.gradients` with ``m_total``), the gradients and the cost travel
in one flat buffer through one Allreduce (sum), and every rank applies the same update.
The sum of the shards' terms is the full-batch gradient, so the cost history is the
single-process full-batch one to rounding (1e-9 checked in float64 at 2 ranks).

On CUDA the buffer is reduced where it lives: NCCL through CuPy when every rank has its
own GPU and NCCL is installed, else CUDA-aware MPI when the MPI library says it accepts
CUDA memory (:mod:`deepnet.allreduce` asks it two ways), else through the host (one copy
each way of ~1 MB per step). On the CPU it is plain ``MPI_Allreduce`` on NumPy memory.

Launch with one rank per GPU (or per socket on CPUs)::

    mpiexec -n 2 python -m deepnet.distributed train --data train_catvnoncat.h5
    srun --ntasks-per-node=4 --gpus-per-task=1 python -m deepnet.distributed train ...

``python -m deepnet.distributed bench`` measures compute and communication per step.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Unpack

import numpy as np

from deepnet import backend, threads
from deepnet.allreduce import Allreduce, bind_gpu
from deepnet.backend import array_namespace, to_numpy
from deepnet.engine.fit import LoopOptions, TrainState, check_loop_options, run_loop
from deepnet.engine.sources import ParameterSteps
from deepnet.errors import DataError, DeepnetError, InputError, ShapeError
from deepnet.gradients import grad_keys, gradients
from deepnet.hdf5 import open_hdf5 as _open_h5
from deepnet.hdf5_rows import CourseFile, open_course_file
from deepnet.initialization import Init, check_layer_dims, draw_parameters, place
from deepnet.install import install_hint
from deepnet.kernels import num_layers
from deepnet.optim import Optimizer
from deepnet.regularization import NONE, Regularization
from deepnet.training import DTYPES, make_optimizer, prepare

Array = Any
_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE")


class DistributedError(DeepnetError, RuntimeError):
    """MPI is missing, misconfigured, or the ranks disagree."""


# --------------------------------------------------------------------------- MPI


def mpi() -> ModuleType:
    """The ``mpi4py.MPI`` module (initialising MPI), or DistributedError saying how to get it."""
    try:
        from mpi4py import MPI  # lazy: MPI starts when first asked for
    except ImportError as exc:
        raise DistributedError(
            f"distributed training needs mpi4py and an MPI library ({exc}); install both "
            f"from PyPI with {install_hint('mpi')} (mpi4py + mpich), or build mpi4py "
            "against your cluster's MPI with pip install --no-binary mpi4py mpi4py"
        ) from None
    return MPI


def world() -> Any:
    """MPI's COMM_WORLD, after checking that the launcher and MPI agree on its size."""
    comm = mpi().COMM_WORLD
    _check_launch(comm)
    return comm


def is_root(comm: Any = None) -> bool:
    """True on rank 0 of ``comm`` (default COMM_WORLD): the rank that prints and saves."""
    return (world() if comm is None else comm).Get_rank() == 0


def _check_launch(comm: Any) -> None:
    if comm.Get_size() > 1:
        return
    for var in _LAUNCHER_SIZE_VARS:
        if os.environ.get(var, "1").strip() not in ("", "1"):
            raise DistributedError(
                f"the launcher started {os.environ[var]} processes (${var}) but MPI in this "
                "one sees a single rank: mpiexec/mpirun and mpi4py use different MPI "
                "libraries. Use the mpiexec of the MPI mpi4py was built with (with the PyPI "
                f"wheels: {Path(sys.executable).parent / 'mpiexec'})"
            )


def shard_bounds(m: int, rank: int, size: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous shard: sizes differ by at most one example."""
    if size < 1 or not 0 <= rank < size:
        raise InputError(f"rank {rank} is not in 0..{size - 1}")
    return rank * m // size, (rank + 1) * m // size


def load_shard(source: CourseFile, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Examples [start, stop) of a course file as host X (n_x, b) = pixels / 255 and Y (1, b)."""
    with _open_h5(source.path) as f:
        x = f[source.x_key][start:stop]
        y = f[source.y_key][start:stop]
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"{source.path}: labels in {source.y_key} must be 0 or 1")
    return x.reshape(stop - start, -1).T / 255.0, y.reshape(1, -1)


def agree(comm: Any, action: Callable[[], Any], what: str) -> Any:
    """Run ``action`` on every rank; if it fails on any, raise on all (nobody hangs)."""
    error: BaseException | None = None
    try:
        result = action()
    except Exception as exc:  # re-raised below, after the others heard of it
        error, result = exc, None
    failed = comm.allgather(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    bad = [(rank, msg) for rank, msg in enumerate(failed) if msg is not None]
    if bad:
        rank, msg = bad[0]
        raise DistributedError(f"{what} failed on rank {rank} ({len(bad)} rank(s) failed): {msg}")
    return result


# --------------------------------------------------------------------------- training


def _flatten(xp: Any, grads: dict[str, Array], cost: Array, keys: list[str]) -> Array:
    return xp.concat([xp.reshape(grads[k], (-1,)) for k in keys] + [xp.reshape(cost, (1,))])


def _unflatten(
    xp: Any, flat: Array, shapes: dict[str, tuple[int, ...]]
) -> tuple[dict[str, Array], Array]:
    grads, at = {}, 0
    for key, shape in shapes.items():
        n = math.prod(shape)
        grads[key] = xp.reshape(flat[at : at + n], shape)
        at += n
    return grads, flat[at]


class AllreduceSteps(ParameterSteps):
    """Step source: full-batch steps on this rank's shard, gradients summed over the ranks.

    Every rank computes the gradient of its shard divided by the global ``m_total``, one
    Allreduce adds them up with the cost, and every rank applies the same optimizer update.
    """

    def __init__(
        self,
        X: Array,
        Y: Array,
        parameters: dict[str, Array],
        optimizer: Optimizer,
        *,
        reducer: Allreduce,
        m_total: int,
        hidden: str = "relu",
        resume: dict[str, Any] | None = None,
        reg: Regularization = NONE,
        offset: int = 0,
    ) -> None:
        super().__init__(parameters, optimizer, hidden, resume, reg)
        self.X, self.Y, self.reducer, self.m_total = X, Y, reducer, m_total
        self.columns = slice(offset, offset + X.shape[1])  # this shard's examples of them all
        self.xp = array_namespace(X, Y)
        self.keys = grad_keys(num_layers(parameters))
        self.shapes = {k: tuple(parameters[k[1:]].shape) for k in self.keys}

    def run(self, iteration: int) -> Array:
        """One full-batch step over all ranks; returns the global cost (before it)."""
        xp = self.xp
        reg, masks = self.reg, None
        if reg.keep_prob < 1:  # every rank draws the full batch's masks and keeps its columns
            drawn = reg.masks(reg.hidden_sizes(self.params), self.m_total, iteration, 0)
            masks = reg.piece_masks(drawn, self.columns, self.X)
        grads, cost = gradients(self.params, self.X, self.Y, self.m_total, self.hidden,
                                keep_prob=reg.keep_prob, masks=masks)  # fmt: skip
        flat = self.reducer(_flatten(xp, grads, cost, self.keys))
        grads, cost = _unflatten(xp, flat, self.shapes)
        grads, cost = self.reg.add_l2(self.params, grads, cost, self.m_total)  # on every rank
        self.params, self.state = self.optimizer.update(self.params, grads, self.state, iteration)
        return cost


def agreed_stop(comm: Any, should_stop: Callable[[], bool] | None) -> Callable[[], bool] | None:
    """``should_stop`` asked on every rank and agreed on: all stop if any was told to.

    A signal may reach one rank only; stopping alone would leave the others waiting in
    the next Allreduce. One small allreduce per iteration keeps them together.
    """
    if should_stop is None or comm is None or comm.Get_size() == 1:
        return should_stop
    return lambda: comm.allreduce(int(bool(should_stop())), op=mpi().MAX) == 1


def fit_distributed(
    X: Array,
    Y: Array,
    state: TrainState,
    *,
    comm: Any,
    learning_rate: float | None = None,
    num_iterations: int,
    optimizer: Optimizer | None = None,
    hidden: str = "relu",
    m_total: int | None = None,
    reduce: str = "auto",
    reducer: Allreduce | None = None,
    lambd: float = 0.0,
    keep_prob: float = 1.0,
    seed: int = 1,
    **options: Unpack[LoopOptions],
) -> TrainState:
    """Full-batch :func:`deepnet.training.fit` where X, Y are this rank's shard of the data.

    The same loop (:func:`deepnet.engine.fit.run_loop`) over an :class:`AllreduceSteps`.
    Every rank must call it with the same ``state``. ``m_total`` (the examples of all
    shards) is summed over the ranks when not given. ``comm=None`` runs on one process
    without MPI. Costs are recorded (and the hooks called) on every rank, identically;
    ``should_stop`` is agreed on by all ranks; at the end the ranks check that their
    parameters are bit-for-bit the same. ``lambd`` adds L2 once to the summed gradients
    (every rank the same); ``keep_prob`` applies dropout with the masks the in-memory full
    batch draws (``seed``), each rank taking its shard's columns (shards in rank order).
    Early stopping is an in-memory option.
    """
    optimizer = make_optimizer(learning_rate, optimizer)
    reg = Regularization(lambd, keep_prob, seed)  # checked before any collective call
    check_loop_options(num_iterations, **options)
    offset = 0  # the shard's first example among all (dropout's masks are by example)
    if reg.keep_prob < 1 and comm is not None and comm.Get_size() > 1:
        offset = comm.exscan(X.shape[1]) or 0  # rank 0 gets None
    if m_total is None:
        m_total = X.shape[1] if comm is None else comm.allreduce(X.shape[1])
    if m_total < 1:
        raise InputError("the shards hold no examples at all; training needs at least one")
    reducer = reducer or Allreduce(comm, X, reduce)
    steps = AllreduceSteps(
        X, Y, state.parameters, optimizer, reducer=reducer, m_total=m_total, hidden=hidden,
        resume=state.resume, reg=reg, offset=offset,
    )  # fmt: skip
    options["should_stop"] = agreed_stop(comm, options.get("should_stop"))
    # Each rank takes its share of the node's free cores (deepnet.threads: local ranks).
    with threads.blas_threads(resume=state.resume) as chosen:
        options = threads.recording(chosen, options)  # type: ignore[assignment]
        state = run_loop(steps, state, num_iterations=num_iterations, **options)
    check_identical(comm, state.parameters)
    return threads.stamped(state, chosen)


def check_identical(comm: Any, parameters: dict[str, Array]) -> None:
    """Raise DistributedError unless every rank holds bit-for-bit the same parameters."""
    if comm is None or comm.Get_size() == 1:
        return
    digest = hashlib.sha256()
    for key in sorted(parameters):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(to_numpy(parameters[key])).tobytes())
    digests = comm.allgather(digest.hexdigest())
    if len(set(digests)) != 1:
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        raise DistributedError(
            f"parameters differ between ranks (ranks {differ} differ from rank 0); the "
            "reduction did not give every rank the same sum"
        )


def _check_columns(X: Any, Y: Any, n_x: int) -> None:
    if len(getattr(X, "shape", ())) != 2 or X.shape[0] != n_x:
        raise ShapeError(
            f"X must have shape ({n_x}, m), one example per column, to match "
            f"layers_dims[0] = {n_x}; got {tuple(getattr(X, 'shape', ()))}"
        )
    if tuple(getattr(Y, "shape", ())) != (1, X.shape[1]):
        raise ShapeError(f"Y must have shape (1, {X.shape[1]}); got {getattr(Y, 'shape', None)}")
    if X.shape[1] == 0:
        raise ShapeError("X has no examples (0 columns); training needs at least one")


def train_distributed(
    source: str | os.PathLike | CourseFile | tuple[Array, Array],
    layers_dims: Sequence[int],
    *,
    comm: Any = None,
    learning_rate: float = 0.0075,
    num_iterations: int = 3000,
    init: Init = "lecun",
    seed: int = 1,
    device: str | None = None,
    dtype: str = "float64",
    reduce: str = "auto",
    **options: Unpack[LoopOptions],
) -> tuple[dict[str, Array], list[float]]:
    """Full-batch ``L_layer_model`` on a course file, data-parallel over MPI ranks.

    Call it on every rank (``mpiexec -n N ...``); ``comm`` defaults to COMM_WORLD.
    ``source`` is a course-layout HDF5 file, of which each rank reads only its shard, or
    ``(X, Y)``: the whole preprocessed set (X (n_x, m) = pixels / 255, Y (1, m)), the same
    on every rank, of which each keeps its shard. Parameters are drawn identically on every
    rank. Returns (parameters, costs), the same on every rank. ``print_cost`` prints on
    rank 0 only; ``callback`` runs on every rank. On CUDA each rank takes the GPU
    ``local_rank % visible GPUs``.
    """
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    dims = check_layer_dims(layers_dims)
    comm = world() if comm is None else comm
    requested = device
    device = agree(comm, lambda: backend.resolve_device(requested), "choosing the device")
    if device == "cuda":
        agree(comm, lambda: bind_gpu(comm), "choosing a GPU")
    rank, size = comm.Get_rank(), comm.Get_size()

    def load() -> tuple[Array, Array, int]:
        if isinstance(source, tuple):  # the whole set in memory, identical on every rank
            X_all, Y_all = source
            _check_columns(X_all, Y_all, dims[0])
            m = X_all.shape[1]
            start, stop = shard_bounds(m, rank, size)
            X, Y = X_all[:, start:stop], Y_all[:, start:stop]
        else:
            info = source if isinstance(source, CourseFile) else open_course_file(source)
            if info.n_x != dims[0]:
                raise InputError(
                    f"layers_dims[0] = {dims[0]} but the images of {info.path} have "
                    f"{info.n_x} values each"
                )
            m = info.m
            X, Y = load_shard(info, *shard_bounds(m, rank, size))
        X, Y = prepare(X, Y, device, dtype)
        return X, Y, m

    X, Y, m = agree(comm, load, "loading this rank's shard")
    state = TrainState(place(draw_parameters(dims, init, seed), device, dtype))
    reducer = Allreduce(comm, X, reduce)  # raises alike on every rank by itself
    options["print_cost"] = options.get("print_cost", False) and rank == 0
    state = fit_distributed(
        X, Y, state, comm=comm, m_total=m, learning_rate=learning_rate,
        num_iterations=num_iterations, reducer=reducer, **options,
    )  # fmt: skip
    return state.parameters, state.costs


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deepnet.distributed``: an alias of :func:`deepnet.measure.mpi_main`
    (``mpiexec -n N deepnet train --distributed`` is the command's own way to train)."""
    from deepnet.measure import mpi_main

    return mpi_main(argv)


if __name__ == "__main__":
    from deepnet.measure import mpi_main_or_abort

    sys.exit(mpi_main_or_abort())
