"""Batches streamed to a GPU: uint8 rows in pinned host memory, copied asynchronously.

The reader fills page-locked host buffers with a batch's uint8 rows (8x fewer bytes than
float64); each batch goes to the GPU with an asynchronous copy on its own stream (the copy
of batch k+1 overlaps the kernels of batch k), and the GPU makes the floats.

X is made as ``fit`` gets it from ``deepnet.data``: the rows are divided by 255 in float64
(then rounded once to float32 if that is the dtype) and X is their transpose, so it is
example-major (F-ordered, each column contiguous), the layout ``training.take_columns``
gives fit's batches. Same values, same layout, so the step makes the same cuBLAS calls on
the same bits as fit's mini-batch steps on that GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from deepnet.backend import cupy_module

Array = Any


class CudaBatches:
    """The CUDA side of ``streaming.BatchStream``: pinned buffers, a copy stream, two slots.

    Two device slots alternate; the copy into a slot waits (on the GPU, not the host) for
    the conversion that last read it, and the training stream waits for the copy. The
    pinned buffer goes back to the reader once its copy has finished. ``reader`` has
    ``source.n_x`` and ``read(idx, rows_out) -> labels``; ``cupy`` is for tests.
    """

    def __init__(self, reader: Any, max_batch: int, xp: Any, dtype: Any, cupy: Any = None) -> None:
        self.reader, self.xp, self.dtype = reader, xp, dtype
        self.cupy = cupy if cupy is not None else cupy_module()
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
        """Read the rows of ``idx`` into ``buf`` (on the reader thread)."""
        rows = buf[: len(idx) * self.reader.source.n_x].reshape(len(idx), -1)
        return idx, rows, self.reader.read(idx, rows), buf

    def upload(self, rows: np.ndarray, y: np.ndarray, release: Callable) -> tuple[Array, Array]:
        """(X (n_x, b) F-ordered, Y (1, b)) on the GPU; ``release(event)`` frees ``rows``."""
        xp, cupy = self.xp, self.cupy
        compute = cupy.cuda.get_current_stream()
        if self.slot_done[self.k] is not None:
            self.copy_stream.wait_event(self.slot_done[self.k])
        dev = self.slots[self.k][: rows.size].reshape(rows.shape)
        dev.set(rows, stream=self.copy_stream)  # asynchronous: rows live in pinned memory
        copied = self.copy_stream.record()
        release(copied)  # the reader refills the pinned buffer after the copy, not before
        compute.wait_event(copied)
        rows_f = xp.astype(dev, xp.float64) / 255.0  # (b, n_x), C order, as fit's float64
        if rows_f.dtype != self.dtype:
            rows_f = xp.astype(rows_f, self.dtype)  # rounded once, as fit's cast
        X = rows_f.T  # (n_x, b) example-major, the layout of fit's batches
        self.slot_done[self.k] = compute.record()
        self.k ^= 1
        Y = xp.astype(xp.reshape(xp.asarray(y), (1, y.shape[0])), self.dtype)  # b labels
        return X, Y
