"""Out-of-core training: mini-batches read from an HDF5 file that need not fit in memory.

The file is the course's layout (``train_set_x`` uint8 (m, 64, 64, 3), ``train_set_y`` (m,),
``list_classes``). Only one batch, plus the ones being read ahead, is ever in memory:

- a background thread prepares the next batches while the current one trains (NumPy's
  matrix products, ufuncs and ``pread`` all release the GIL, so the two can overlap);
- the rows of a batch are read in file order (sorted, one ``pread`` per run of consecutive
  rows when the dataset is stored contiguously, else h5py's sorted fancy indexing) and put
  back in batch order in memory;
- on the CPU that thread also casts, transposes and scales the rows into the batch X;
- on CUDA it fills page-locked (pinned) host buffers with uint8 rows (8x fewer bytes than
  float64), each batch goes to the GPU with an asynchronous copy on its own stream (the
  copy of batch k+1 overlaps the kernels of batch k), and the GPU makes the floats.

The batches are those of :func:`deepnet.training.batch_order` and each step is
:func:`deepnet.training.train_step`, so for the same ``batch_size`` and ``seed`` the result
is the in-memory :func:`deepnet.training.fit` result, bit for bit. Full batch
(``batch_size=None``) reads the file in chunks and adds up their gradients before the one
update of the iteration (:mod:`deepnet.gradients`): the full-batch result to rounding.

``python -m deepnet.streaming make-synthetic PATH --n 200000`` writes a large file in the
course's layout, block by block; ``python -m deepnet.streaming train PATH ...`` trains from
one and prints its costs, speed and peak memory as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import array_api_compat
import h5py
import numpy as np

from deepnet import backend
from deepnet.backend import array_namespace
from deepnet.constants import CLASSES, DTYPES, IMAGE_SHAPE
from deepnet.errors import DeepnetError, InputError, ShapeError
from deepnet.gradients import add_gradients, apply_gradients, gradients
from deepnet.hdf5 import open_hdf5 as _open_h5  # noqa: F401  (deepnet.distributed uses it)
from deepnet.hdf5_rows import CourseFile, open_course_file  # noqa: F401  (moved there)
from deepnet.hdf5_rows import RowReader as _Reader
from deepnet.initialization import Init, check_layer_dims, draw_parameters, place
from deepnet.training import TrainState, _check_finite, batch_order, train_step

Array = Any
DEFAULT_CHUNK = 256  # examples per chunk of a full-batch pass: 25 MB of float64 at 64x64x3
_SYNTHETIC_BLOCK = 1024  # images generated and written at a time (12.6 MB)


# --------------------------------------------------------------------------- the pipeline


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _ReadAhead:
    """Produces the planned batches in a background thread into a small pool of buffers.

    A buffer goes back to the pool with ``release(buf, event)``; the thread waits for
    ``event`` (the end of the buffer's copy to the GPU) before filling it again.
    """

    def __init__(
        self,
        produce: Callable[[np.ndarray, np.ndarray], tuple],
        plan: Iterator[np.ndarray],
        buffers: list[np.ndarray],
    ) -> None:
        self._produce = produce
        self._free: queue.Queue = queue.Queue()
        for buf in buffers:
            self._free.put((buf, None))
        self._ready: queue.Queue = queue.Queue()  # never more entries than buffers
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(plan,), name="deepnet-read-ahead", daemon=True
        )
        self._thread.start()

    def _run(self, plan: Iterator[np.ndarray]) -> None:
        try:
            for idx in plan:
                buf, event = self._take_free()
                if buf is None:
                    return
                if event is not None:
                    event.synchronize()
                self._ready.put(self._produce(idx, buf))
        except BaseException as exc:  # handed to the training thread, which raises it
            self._ready.put(_Failure(exc))

    def _take_free(self) -> tuple[np.ndarray | None, Any]:
        while not self._stop.is_set():
            try:
                return self._free.get(timeout=0.05)
            except queue.Empty:
                continue
        return None, None

    def get(self) -> tuple:
        """The next batch, in plan order (raises what the producer raised)."""
        item = self._ready.get()
        if isinstance(item, _Failure):
            raise item.exc
        return item

    def release(self, buf: np.ndarray, event: Any = None) -> None:
        """Give a buffer back once its contents have been used (or their copy queued)."""
        self._free.put((buf, event))

    def close(self) -> None:
        """Stop producing and wait for the thread."""
        self._stop.set()
        self._thread.join()


class _Inline:
    """The same interface as :class:`_ReadAhead`, producing each batch only when asked."""

    def __init__(self, produce: Callable, plan: Iterator[np.ndarray], buffers: list) -> None:
        self._produce, self._plan = produce, plan
        self._buf, self._event = buffers[0], None

    def get(self) -> tuple:
        if self._event is not None:
            self._event.synchronize()
        return self._produce(next(self._plan), self._buf)

    def release(self, buf: np.ndarray, event: Any = None) -> None:
        self._event = event

    def close(self) -> None:
        pass


class _HostBatches:
    """CPU: the producer turns rows into the final X itself, off the training thread.

    X = rows.T / 255 is computed in float64 (as in-memory loading does), straight into an
    example-major buffer (each column contiguous, no transpose copy): the layout ``fit`` gives
    its batches of ``deepnet.data``'s X, so the matrix products see the same memory order and
    give the same bits.
    """

    def __init__(self, reader: _Reader, max_batch: int, dtype: np.dtype) -> None:
        self.reader, self.dtype = reader, np.dtype(dtype)
        self.rows = np.empty((max_batch, reader.source.n_x), np.uint8)
        self.nbytes = max_batch * reader.source.n_x * self.dtype.itemsize

    def buffer(self) -> np.ndarray:
        return np.empty(self.nbytes, np.uint8)

    def produce(self, idx: np.ndarray, buf: np.ndarray) -> tuple:
        b, n_x = len(idx), self.reader.source.n_x
        rows = self.rows[:b]
        y = self.reader.read(idx, rows)
        Xt = buf[: b * n_x * self.dtype.itemsize].view(self.dtype).reshape(b, n_x)
        if self.dtype == np.float64:
            np.divide(rows, 255.0, out=Xt, dtype=np.float64)  # cast and scale in one pass
        else:
            Xt[...] = rows / 255.0  # float64, then rounded once to float32
        return idx, Xt.T, np.asarray(y, self.dtype).reshape(1, b), buf


class _CudaBatches:
    """CUDA: rows in pinned host memory, an asynchronous copy on a side stream, then the GPU
    transposes and scales them.

    Two device slots alternate; the copy into a slot waits (on the GPU, not the host) for
    the conversion that last read it, and the training stream waits for the copy. The
    pinned buffer goes back to the reader once its copy has finished.
    """

    def __init__(self, reader: _Reader, max_batch: int, xp: Any, dtype: Any) -> None:
        self.reader, self.xp, self.dtype = reader, xp, dtype
        self.cupy = backend.cupy_module()
        self.nbytes = max_batch * reader.source.n_x
        self.copy_stream = self.cupy.cuda.Stream(non_blocking=True)
        self.slots = [self.cupy.empty(self.nbytes, dtype=self.cupy.uint8) for _ in range(2)]
        self.slot_done: list[Any] = [None, None]
        self.k = 0

    def buffer(self) -> np.ndarray:
        """A NumPy view of page-locked host memory (kept alive by the view)."""
        mem = self.cupy.cuda.alloc_pinned_memory(self.nbytes)
        return np.frombuffer(mem, np.uint8, self.nbytes)

    def produce(self, idx: np.ndarray, buf: np.ndarray) -> tuple:
        rows = buf[: len(idx) * self.reader.source.n_x].reshape(len(idx), -1)
        return idx, rows, self.reader.read(idx, rows), buf

    def upload(self, rows: np.ndarray, y: np.ndarray, release: Callable) -> tuple[Array, Array]:
        xp, cupy = self.xp, self.cupy
        compute = cupy.cuda.get_current_stream()
        if self.slot_done[self.k] is not None:
            self.copy_stream.wait_event(self.slot_done[self.k])
        dev = self.slots[self.k][: rows.size].reshape(rows.shape)
        dev.set(rows, stream=self.copy_stream)  # asynchronous: rows live in pinned memory
        copied = self.copy_stream.record()
        release(copied)  # the reader refills the pinned buffer after the copy, not before
        compute.wait_event(copied)
        # C order, as xp.take(X, cols, axis=1) gives fit: same layout, same cuBLAS path.
        X = xp.astype(cupy.ascontiguousarray(dev.T), xp.float64) / 255.0
        if X.dtype != self.dtype:
            X = xp.astype(X, self.dtype)
        self.slot_done[self.k] = compute.record()
        self.k ^= 1
        Y = xp.astype(xp.reshape(xp.asarray(y), (1, y.shape[0])), self.dtype)  # b labels
        return X, Y


class BatchStream:
    """Batches of a course file, in plan order, as (idx, X, Y) on the parameters' device.

    ``plan`` yields the example indices of each batch, at most ``max_batch`` each. With
    ``prefetch`` (the default) ``depth`` batches are prepared ahead in a thread. A batch
    stays valid until the next call of :meth:`next`. Use as a context manager.
    """

    def __init__(
        self,
        source: CourseFile,
        plan: Iterator[np.ndarray],
        *,
        max_batch: int,
        like: Array,
        prefetch: bool = True,
        depth: int = 2,
    ) -> None:
        xp = array_namespace(like)
        self._xp = xp
        self._reader = _Reader(source, max_batch)
        self._cuda = array_api_compat.is_cupy_namespace(xp)
        if self._cuda:
            self._batches: Any = _CudaBatches(self._reader, max_batch, xp, like.dtype)
        else:
            self._batches = _HostBatches(self._reader, max_batch, _host_dtype(like))
        # depth ready + one being filled (+ on the CPU, one held by the training step)
        n_buffers = (depth + 1 + (not self._cuda)) if prefetch else 1
        buffers = [self._batches.buffer() for _ in range(n_buffers)]
        kind = _ReadAhead if prefetch else _Inline
        self._queue = kind(self._batches.produce, plan, buffers)
        self._held: np.ndarray | None = None

    def next(self) -> tuple[np.ndarray, Array, Array]:
        """The next planned batch: (example indices, X (n_x, b), Y (1, b))."""
        if self._held is not None:  # the previous batch's step has returned: reuse its memory
            self._queue.release(self._held)
            self._held = None
        idx, x, y, buf = self._queue.get()
        if self._cuda:
            X, Y = self._batches.upload(x, y, lambda event: self._queue.release(buf, event))
        else:
            self._held = buf
            X, Y = self._xp.asarray(x), self._xp.asarray(y)
        return idx, X, Y

    def close(self) -> None:
        """Stop the producer thread and close the file."""
        self._queue.close()
        self._reader.close()

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _host_dtype(like: Array) -> np.dtype:
    """The NumPy dtype matching an array's dtype (float64 or float32)."""
    return np.dtype("float32") if "float32" in str(like.dtype) else np.dtype("float64")


# --------------------------------------------------------------------------- training


def _epoch_batches(m: int, batch_size: int | None, seed: int, epoch: int, chunk: int) -> list:
    batches = batch_order(m, batch_size, seed, epoch)
    if batches is None:  # full batch: consecutive chunks, gradients added up
        return [np.arange(s, min(s + chunk, m)) for s in range(0, m, chunk)]
    return batches


def _check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")


def fit_stream(
    source: str | os.PathLike | CourseFile,
    state: TrainState,
    *,
    learning_rate: float,
    num_iterations: int,
    batch_size: int | None = None,
    seed: int = 1,
    record_every: int = 100,
    print_cost: bool = False,
    callback: Callable[[TrainState, float], None] | None = None,
    prefetch: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
) -> TrainState:
    """:func:`deepnet.training.fit`, with the examples read from a course file as needed.

    Same batches, same steps, same recorded costs, callback and divergence handling as
    ``fit`` on the file's data loaded in memory (X = images / 255, one column each). The
    data go to the parameters' device in their dtype. ``batch_size=None`` is full batch:
    each iteration reads the file in ``chunk_size`` pieces and adds up their gradients.
    """
    if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate)) or (
        learning_rate <= 0
    ):
        raise InputError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
    _check_positive_int("batch_size", batch_size, allow_none=True)
    _check_positive_int("chunk_size", chunk_size)
    _check_positive_int("record_every", record_every)
    if not isinstance(source, CourseFile):
        source = open_course_file(source)
    params = state.parameters
    W1 = params["W1"]
    if W1.shape[1] != source.n_x:
        raise ShapeError(
            f"the network takes {W1.shape[1]} inputs (W1 is {tuple(W1.shape)}) but the images "
            f"of {source.path} have {source.n_x} values each"
        )
    m = source.m
    first, last = state.iteration, num_iterations
    full_batch = batch_size is None or batch_size >= m  # batch_order's rule
    max_batch = min(m, chunk_size if full_batch else batch_size)
    n_batches = -(-m // max_batch)  # per iteration

    def plan() -> Iterator[np.ndarray]:
        for epoch in range(first, last):
            yield from _epoch_batches(m, batch_size, seed, epoch, max_batch)

    costs = list(state.costs)
    good_params, good_iteration = params, first
    cost = None
    with BatchStream(source, plan(), max_batch=max_batch, like=W1, prefetch=prefetch) as stream:
        for i in range(first, last):
            params_in = params
            if full_batch:
                total, cost = None, 0.0
                for _ in range(n_batches):
                    _, X, Y = stream.next()
                    grads, chunk_cost = gradients(params, X, Y, m_total=m)
                    total, cost = add_gradients(total, grads), cost + chunk_cost
                params = apply_gradients(params, total, learning_rate)
            else:
                cost = 0.0
                for _ in range(n_batches):  # exactly fit's loop
                    idx, X, Y = stream.next()
                    params, batch_cost = train_step(params, X, Y, learning_rate)
                    cost = cost + batch_cost * (len(idx) / m)
            if i % record_every == 0:
                value = float(cost)  # the one device->host read, only when recorded
                _check_finite(value, i, good_params, good_iteration, costs)
                good_params, good_iteration = params_in, i
                costs.append(value)
                if print_cost:
                    print(f"Cost after iteration {i}: {value}")
                if callback is not None:
                    callback(TrainState(params, costs, i + 1), value)
    if cost is not None and (last - 1) % record_every != 0:
        _check_finite(float(cost), last - 1, good_params, good_iteration, costs)
    return TrainState(params, costs, max(last, state.iteration))


def train_stream(
    source: str | os.PathLike | CourseFile,
    layers_dims: Sequence[int],
    *,
    learning_rate: float = 0.0075,
    num_iterations: int = 3000,
    batch_size: int | None = None,
    init: Init = "lecun",
    seed: int = 1,
    device: str | None = None,
    dtype: str = "float64",
    record_every: int = 100,
    print_cost: bool = False,
    callback: Callable[[TrainState, float], None] | None = None,
    prefetch: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[dict[str, Array], list[float]]:
    """``L_layer_model`` on a course file read as needed; returns (parameters, costs).

    Parameters are drawn as ``L_layer_model`` draws them (``init``, ``seed``) and placed on
    ``device`` in ``dtype``; the data follow them there batch by batch.
    """
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    dims = check_layer_dims(layers_dims)
    source = source if isinstance(source, CourseFile) else open_course_file(source)
    state = TrainState(place(draw_parameters(dims, init, seed), device, dtype))
    state = fit_stream(
        source, state, learning_rate=learning_rate, num_iterations=num_iterations,
        batch_size=batch_size, seed=seed, record_every=record_every, print_cost=print_cost,
        callback=callback, prefetch=prefetch, chunk_size=chunk_size,
    )  # fmt: skip
    return state.parameters, state.costs


# --------------------------------------------------------------------------- synthetic data


def make_synthetic(
    path: str | os.PathLike,
    n: int,
    *,
    seed: int = 0,
    prefix: str = "train",
    image_shape: Sequence[int] = IMAGE_SHAPE,
) -> CourseFile:
    """Write ``n`` synthetic images in the course's layout, 1024 at a time; describe the file.

    Labels are fair coin flips; a cat picture's pixels are drawn from 64..255 and a
    non-cat's from 0..191, so the task is learnable. The content depends only on ``n``,
    ``seed`` and ``image_shape``. Memory use is one block, whatever ``n``.
    """
    _check_positive_int("n", n)
    shape = tuple(int(s) for s in image_shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        # Contiguous storage (like the course's files): rows can be read with plain preads.
        x = f.create_dataset(f"{prefix}_set_x", shape=(n, *shape), dtype=np.uint8)
        y = f.create_dataset(f"{prefix}_set_y", shape=(n,), dtype=np.int64)
        f.create_dataset("list_classes", data=np.array(CLASSES))
        for block, start in enumerate(range(0, n, _SYNTHETIC_BLOCK)):
            stop = min(n, start + _SYNTHETIC_BLOCK)
            rng = np.random.default_rng([seed, block])
            labels = rng.integers(0, 2, stop - start)
            pixels = rng.integers(0, 192, (stop - start, *shape), dtype=np.uint8)
            pixels += (labels.astype(np.uint8) * 64).reshape(-1, *([1] * len(shape)))
            x[start:stop] = pixels
            y[start:stop] = labels
    return open_course_file(path)


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM on Linux, ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource  # noqa: PLC0415  (POSIX only; Linux answered above)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


# --------------------------------------------------------------------------- command line


def parse_layers(text: str) -> list[int]:
    """``"12288,20,7,5,1"`` -> [12288, 20, 7, 5, 1] (an argparse type)."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected layer sizes like 12288,20,7,5,1, got {text!r}"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    """``make-synthetic PATH --n N`` or ``train PATH ...`` (prints JSON); returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m deepnet.streaming", description=__doc__)
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
        return _run(args)
    except DeepnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
