"""Where the parameters of one model shape live in one flat device buffer.

Each parameter set of the fused step is one allocation (W1, b1, ..., WL, bL, then the
cost), each array on a 256-byte boundary, so a whole set is copied with one memcpy and the
step updates it in place. :func:`layout_of` also decides which steps the fused path takes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepnet import constants

Array = Any
DTYPES = tuple(np.dtype(d) for d in constants.DTYPES)  # what the fused kernels handle
ALIGN_BYTES = 256  # each parameter starts on a 256-byte boundary, as cuBLAS likes


@dataclass(frozen=True)
class Layout:
    """Where W1, b1, ..., WL, bL and the cost live in one flat buffer, for one model shape."""

    dims: tuple[int, ...]  # n_x, n_1, ..., n_L
    dtype: np.dtype
    m: int  # examples per step (columns of X)

    @functools.cached_property
    def keys(self) -> tuple[str, ...]:
        return tuple(f"{p}{layer}" for layer in range(1, len(self.dims)) for p in "Wb")

    @functools.cached_property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        d = self.dims
        return tuple(
            (d[layer], d[layer - 1]) if p == "W" else (d[layer], 1)
            for layer in range(1, len(d))
            for p in "Wb"
        )

    @functools.cached_property
    def offsets(self) -> tuple[int, ...]:
        align = ALIGN_BYTES // self.dtype.itemsize
        offsets, end = [], 0
        for rows, cols in self.shapes:
            start = -(-end // align) * align
            offsets.append(start)
            end = start + rows * cols
        return tuple(offsets)

    @property
    def span(self) -> int:
        """Elements from the start of W1 to the end of bL (what a parameter copy moves)."""
        rows, cols = self.shapes[-1]
        return self.offsets[-1] + rows * cols

    @property
    def cost_offset(self) -> int:
        return self.span

    @property
    def size(self) -> int:
        return self.span + 1

    def views(self, flat: Array) -> dict[str, Array]:
        """The parameter dict whose arrays are views into ``flat``."""
        return {
            key: flat[off : off + rows * cols].reshape((rows, cols))
            for key, off, (rows, cols) in zip(self.keys, self.offsets, self.shapes, strict=True)
        }

    def layers(self, flat: Array) -> list[tuple[Array, Array]]:
        """[(W1, b1), ..., (WL, bL)] as views into ``flat``."""
        v = self.views(flat)
        return [(v[f"W{layer}"], v[f"b{layer}"]) for layer in range(1, len(self.dims))]

    def cost(self, flat: Array) -> Array:
        """The 0-d view of the cost slot."""
        return flat[self.cost_offset : self.cost_offset + 1].reshape(())


def device_id(a: Array) -> Any:
    """The GPU's number for a CuPy array; NumPy's "cpu" for a NumPy one."""
    device = getattr(a, "device", None)
    return getattr(device, "id", device)


@functools.lru_cache(maxsize=64)
def layout_for(dims: tuple[int, ...], dtype: str, m: int) -> Layout:
    """The (cached) layout of a model with layer sizes ``dims``, in ``dtype``, at batch ``m``."""
    return Layout(dims, np.dtype(dtype), m)


def layout_of(parameters: Any, X: Array, Y: Array) -> Layout | None:
    """The layout of a step the fused path can take, or None (the generic step takes it).

    It takes float32 or float64 arrays of one type on one device: X (n_x, m) C- or
    F-contiguous with m >= 1, Y (1, m) or (n_L, m), and W1, b1, ..., WL, bL chaining from n_x.
    """
    if type(Y) is not type(X) or not isinstance(parameters, dict):
        return None
    dtype = X.dtype
    if dtype not in DTYPES or Y.dtype != dtype or len(X.shape) != 2 or len(Y.shape) != 2:
        return None
    if not (X.flags.c_contiguous or X.flags.f_contiguous) or X.shape[1] < 1:
        return None
    L = len(parameters) // 2
    if L < 1 or len(parameters) != 2 * L:
        return None
    device = device_id(X)
    dims = [X.shape[0]]
    for layer in range(1, L + 1):
        W, b = parameters.get(f"W{layer}"), parameters.get(f"b{layer}")
        for p in (W, b):
            if type(p) is not type(X) or p.dtype != dtype or device_id(p) != device:
                return None
        if len(W.shape) != 2 or W.shape[1] != dims[-1] or tuple(b.shape) != (W.shape[0], 1):
            return None
        dims.append(W.shape[0])
    m = X.shape[1]
    if Y.shape[1] != m or Y.shape[0] not in (1, dims[-1]):
        return None
    return layout_for(tuple(dims), dtype.str, m)
