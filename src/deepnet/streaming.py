"""Out-of-core training: mini-batches read from an HDF5 file that need not fit in memory.

The file is the course's layout (``train_set_x`` uint8 (m, 64, 64, 3), ``train_set_y`` (m,),
``list_classes``). Only one batch, plus the ones being read ahead, is ever in memory:

- a background thread prepares the next batches while the current one trains (NumPy's
  matrix products, ufuncs and ``pread`` all release the GIL, so the two can overlap);
- the rows of a batch are read in file order (sorted, one ``pread`` per run of consecutive
  rows when the dataset is stored contiguously, else h5py's sorted fancy indexing) and put
  back in batch order in memory;
- on the CPU that thread also casts, transposes and scales the rows into the batch X;
- on CUDA it fills page-locked (pinned) host buffers with uint8 rows, each batch goes to
  the GPU with an asynchronous copy on its own stream, and the GPU makes the floats in
  fit's layout (:mod:`deepnet.cuda.batches`).

The batches are those of :func:`deepnet.training.batch_order` and each step is
:func:`deepnet.training.train_step`, so for the same ``batch_size`` and ``seed`` the result
is the in-memory :func:`deepnet.training.fit` result, bit for bit (the same loop,
:func:`deepnet.engine.fit.run_loop`, over a :class:`StreamSteps` source). Full batch
(``batch_size=None``) reads the file in chunks and adds up their gradients before the one
update of the iteration (:mod:`deepnet.gradients`): the full-batch result to rounding.

``deepnet make-data PATH --n 200000`` writes a large file in the course's layout, block by
block; ``deepnet train --stream PATH`` trains from one (checkpoints, stop, resume, a saved
model). ``python -m deepnet.streaming train PATH`` (:mod:`deepnet.measure`) prints a run's
costs, speed and peak memory as JSON.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Unpack

import array_api_compat
import h5py
import numpy as np

from deepnet import threads
from deepnet.backend import array_namespace
from deepnet.constants import CLASSES, DTYPES, IMAGE_SHAPE
from deepnet.cuda.batches import CudaBatches as _CudaBatches
from deepnet.engine.fit import LoopOptions, TrainState, check_loop_options, run_loop
from deepnet.engine.sources import ParameterSteps, batch_order
from deepnet.errors import InputError, ShapeError
from deepnet.gradients import add_gradients, gradients
from deepnet.hdf5_rows import CourseFile, open_course_file
from deepnet.hdf5_rows import RowReader as _Reader
from deepnet.initialization import Init, check_layer_dims, draw_parameters, place
from deepnet.optim import Optimizer
from deepnet.regularization import NONE, Regularization
from deepnet.training import make_optimizer
from deepnet.validation import check_count

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
        self._xp, self._device = xp, array_api_compat.device(like)
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
            xp, where = self._xp, self._device
            X, Y = xp.asarray(x, device=where), xp.asarray(y, device=where)
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


class StreamSteps(ParameterSteps):
    """Step source: iterations over a course file read as needed (see the module docstring).

    Mini-batches are :func:`deepnet.engine.sources.one_step` on each batch; full batch adds
    up the chunks' gradients (:mod:`deepnet.gradients`) before one optimizer update.
    """

    def __init__(
        self,
        source: CourseFile,
        parameters: dict[str, Array],
        optimizer: Optimizer,
        *,
        first: int,
        last: int,
        batch_size: int | None,
        seed: int,
        hidden: str = "relu",
        prefetch: bool = True,
        chunk_size: int = DEFAULT_CHUNK,
        resume: dict[str, Any] | None = None,
        reg: Regularization = NONE,
    ) -> None:
        W1 = parameters["W1"]
        if W1.shape[1] != source.n_x:
            raise ShapeError(
                f"the network takes {W1.shape[1]} inputs (W1 is {tuple(W1.shape)}) but the "
                f"images of {source.path} have {source.n_x} values each"
            )
        m = self.m = source.m
        super().__init__(parameters, optimizer, hidden, resume, reg)
        self.full_batch = batch_size is None or batch_size >= m  # batch_order's rule
        max_batch = min(m, chunk_size if self.full_batch else batch_size)
        self.n_batches = -(-m // max_batch)  # per iteration

        def plan() -> Iterator[np.ndarray]:
            for epoch in range(first, last):
                yield from _epoch_batches(m, batch_size, seed, epoch, max_batch)

        self.stream = BatchStream(source, plan(), max_batch=max_batch, like=W1, prefetch=prefetch)

    def run(self, iteration: int) -> Array:
        """One pass over the file; returns its cost (before the updates)."""
        cost: Any = 0.0
        if self.full_batch:
            total, reg = None, self.reg
            drawn = reg.masks(reg.hidden_sizes(self.params), self.m, iteration, 0)
            for _ in range(self.n_batches):
                idx, X, Y = self.stream.next()
                masks = reg.piece_masks(drawn, idx, X) if drawn else None
                grads, chunk_cost = gradients(self.params, X, Y, self.m, self.hidden,
                                              keep_prob=reg.keep_prob, masks=masks)  # fmt: skip
                total, cost = add_gradients(total, grads), cost + chunk_cost
            total, cost = self.reg.add_l2(self.params, total, cost, self.m)
            self.params, self.state = self.optimizer.update(
                self.params, total, self.state, iteration
            )
            return cost
        for k in range(self.n_batches):  # exactly MemorySteps' loop
            idx, X, Y = self.stream.next()
            cost = cost + self.step(X, Y, iteration, batch=k) * (len(idx) / self.m)
        return cost

    def close(self) -> None:
        """Stop the read-ahead thread and close the file."""
        self.stream.close()


def fit_stream(
    source: str | os.PathLike | CourseFile,
    state: TrainState,
    *,
    learning_rate: float | None = None,
    num_iterations: int,
    batch_size: int | None = None,
    prefetch: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
    seed: int = 1,
    optimizer: Optimizer | None = None,
    hidden: str = "relu",
    lambd: float = 0.0,
    keep_prob: float = 1.0,
    **options: Unpack[LoopOptions],
) -> TrainState:
    """:func:`deepnet.training.fit`, with the examples read from a course file as needed.

    Same batches, same steps, same recorded costs, hooks and divergence handling as
    ``fit`` on the file's data loaded in memory (X = images / 255, one column each): it is
    the same loop (:func:`deepnet.engine.fit.run_loop`) over a :class:`StreamSteps`. The
    data go to the parameters' device in their dtype. ``batch_size=None`` is full batch:
    each iteration reads the file in ``chunk_size`` pieces and adds up their gradients.
    ``lambd`` (L2) and ``keep_prob`` (dropout, the in-memory run's masks) work as in ``fit``.
    """
    optimizer = make_optimizer(learning_rate, optimizer)
    reg = Regularization(lambd, keep_prob, seed)
    check_loop_options(num_iterations, **options)
    if batch_size is not None:
        check_count(batch_size, "batch_size", minimum=1)
    check_count(chunk_size, "chunk_size", minimum=1)
    if not isinstance(source, CourseFile):
        source = open_course_file(source)
    # The read-ahead thread counts as a reader: it takes a core of the BLAS's share.
    with threads.blas_threads(1 if prefetch else 0, resume=state.resume) as chosen:
        steps = StreamSteps(
            source, state.parameters, optimizer, first=state.iteration, last=num_iterations,
            batch_size=batch_size, seed=seed, hidden=hidden, prefetch=prefetch,
            chunk_size=chunk_size, resume=state.resume, reg=reg,
        )  # fmt: skip
        options = threads.recording(chosen, options)  # type: ignore[assignment]
        state = run_loop(steps, state, num_iterations=num_iterations, **options)
    return threads.stamped(state, chosen)


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
    prefetch: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
    **options: Unpack[LoopOptions],
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
        batch_size=batch_size, seed=seed, prefetch=prefetch, chunk_size=chunk_size, **options,
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
    check_count(n, "n", minimum=1)
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


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deepnet.streaming``: an alias of :func:`deepnet.measure.stream_main`
    (``deepnet make-data`` and ``deepnet train --stream`` are the command's own)."""
    from deepnet.measure import stream_main

    return stream_main(argv)


if __name__ == "__main__":
    sys.exit(main())
