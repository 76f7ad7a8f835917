"""The CUDA fast path of ``training.train_step``: fused kernels, cuBLAS updates, a CUDA graph.

On CuPy arrays, ``training.train_step`` hands the step to :func:`cuda_train_step`, which
computes what the generic step computes (same formulas, same order of operations where it
matters for rounding) with far fewer kernel launches:

* each parameter set lives in one flat buffer (W1, b1, ..., WL, bL, then the cost), so a whole
  set is copied with one memcpy and the step updates it in place;
* three fused elementwise kernels: bias + ReLU; sigmoid, dZL = (AL - Y) / m and the cost terms
  from the logits; and the ReLU mask of the backward pass;
* cuBLAS does the updates itself: W <- W - lr dZ A^T is one GEMM with beta = 1, and the bias
  update and the cost sum are GEMVs against a vector of ones;
* when the same (X, Y, learning rate) come back on the same stream, as in a full-batch fit,
  the whole step is captured once as a CUDA graph and replayed: one launch per iteration.

CuPy refuses cuBLAS calls while a stream is capturing (cupy/cupy#6290), so the GEMMs go to
cuBLAS through ctypes, on a handle and a workspace of our own. Where that library can't be
found the step uses CuPy's matmul instead and runs without graphs.

Nothing here crosses the host-device boundary: no synchronisation, no copies to the host.
Two environment switches, read at every step (for benchmarks and debugging):
``DEEPNET_CUDA_FAST=0`` sends CuPy arrays down the generic path, and ``DEEPNET_CUDA_GRAPHS=0``
keeps the fused step but never captures a graph.

The hook, at the top of ``training.train_step``::

    if cuda_step.accepts(parameters, X, Y):
        return cuda_step.cuda_train_step(parameters, X, Y, learning_rate)
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import threading
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from deepnet.backend import cupy_module
from deepnet.errors import InputError

Array = Any
FAST_ENV = "DEEPNET_CUDA_FAST"
GRAPHS_ENV = "DEEPNET_CUDA_GRAPHS"
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_ALIGN_BYTES = 256  # each parameter starts on a 256-byte boundary, as cuBLAS likes
_CUBLAS_WORKSPACE_BYTES = 32 * 2**20  # what cuBLAS asks for on Hopper
OP_N, OP_T = 0, 1  # cublasOperation_t


def _switched_on(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "no", "off")


# --------------------------------------------------------------------------------------
# The public face
# --------------------------------------------------------------------------------------


def accepts(parameters: dict[str, Array], X: Array, Y: Array) -> bool:
    """True when :func:`cuda_train_step` should take this step (CuPy float arrays that fit).

    Cheap, and never imports CuPy: NumPy and array-api-strict arrays answer False at once.
    """
    if not array_api_compat.is_cupy_array(X) or not _switched_on(FAST_ENV):
        return False
    layout = _layout_of(parameters, X, Y)
    if layout is not None:
        _state().checked = (parameters, X, Y, layout)  # spares cuda_train_step a second look
    return layout is not None


def cuda_train_step(
    parameters: dict[str, Array], X: Array, Y: Array, learning_rate: float
) -> tuple[dict[str, Array], Array]:
    """``training.train_step`` on CuPy arrays: (new parameters, cost before the step).

    The inputs are left untouched; the new parameters are views into one fresh device
    buffer, and the cost is a 0-d device array. Nothing is read back to the host.
    """
    state = _state()
    checked, state.checked = state.checked, None
    if checked is not None and checked[0] is parameters and checked[1] is X and checked[2] is Y:
        layout = checked[3]
    else:
        layout = _layout_of(parameters, X, Y) if array_api_compat.is_cupy_array(X) else None
    if layout is None:
        raise InputError(
            "cuda_train_step needs CuPy arrays on one GPU, all float32 or all float64: "
            "X (n_x, m) C- or F-contiguous with m >= 1, Y (1, m), and W1, b1, ..., WL, bL "
            "whose shapes chain from n_x; use deepnet.training.train_step for anything else"
        )
    cp = _cupy()
    with X.device:
        ops = state.ops(cp, X.device.id)
        return state.step(ops, layout, parameters, X, Y, float(learning_rate))


def clear_cache() -> None:
    """Drop this thread's captured graph and scratch buffers (and its references to X, Y).

    A full-batch fit keeps its data referenced here after it returns, so that the next fit
    on the same data can reuse the graph; call this to give that memory back sooner.
    """
    _state().clear()


def graph_active() -> bool:
    """True when this thread holds a captured CUDA graph (a full-batch loop replays it)."""
    graph = _state().graph
    return graph is not None and graph.graph is not None


# --------------------------------------------------------------------------------------
# Parameter layout: one flat buffer per parameter set
# --------------------------------------------------------------------------------------


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
        align = _ALIGN_BYTES // self.dtype.itemsize
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


def _device_id(a: Array) -> Any:
    device = getattr(a, "device", None)
    return getattr(device, "id", device)  # CuPy: the GPU's number; NumPy: "cpu"


@functools.lru_cache(maxsize=64)
def _layout(dims: tuple[int, ...], dtype: str, m: int) -> Layout:
    return Layout(dims, np.dtype(dtype), m)


def _layout_of(parameters: Any, X: Array, Y: Array) -> Layout | None:
    """The layout of a step this module can take, or None (the generic step takes it)."""
    if type(Y) is not type(X) or not isinstance(parameters, dict):
        return None
    dtype = X.dtype
    if dtype not in _DTYPES or Y.dtype != dtype or len(X.shape) != 2 or len(Y.shape) != 2:
        return None
    if not (X.flags.c_contiguous or X.flags.f_contiguous) or X.shape[1] < 1:
        return None
    L = len(parameters) // 2
    if L < 1 or len(parameters) != 2 * L:
        return None
    device = _device_id(X)
    dims = [X.shape[0]]
    for layer in range(1, L + 1):
        W, b = parameters.get(f"W{layer}"), parameters.get(f"b{layer}")
        for p in (W, b):
            if type(p) is not type(X) or p.dtype != dtype or _device_id(p) != device:
                return None
        if len(W.shape) != 2 or W.shape[1] != dims[-1] or tuple(b.shape) != (W.shape[0], 1):
            return None
        dims.append(W.shape[0])
    m = X.shape[1]
    if Y.shape[1] != m or Y.shape[0] not in (1, dims[-1]):
        return None
    return _layout(tuple(dims), dtype.str, m)


# --------------------------------------------------------------------------------------
# The step itself, written against a small set of operations (CUDA, or host for tests)
# --------------------------------------------------------------------------------------


class Workspace:
    """Scratch arrays for one layout: activations, gradients, the cost terms, ones."""

    def __init__(self, ops: Any, layout: Layout):
        xp, dt, m, d = ops.xp, layout.dtype, layout.m, layout.dims
        L = len(d) - 1
        self.acts = [None] + [xp.empty((d[layer], m), dtype=dt) for layer in range(1, L)]
        self.dz = [None] + [xp.empty((d[layer], m), dtype=dt) for layer in range(1, L + 1)]
        self.loss = xp.empty((d[L], m), dtype=dt)
        self.ones = xp.ones((max(1, d[L]) * m,), dtype=dt)
        self.blas = ops.blas.workspace(xp)


def run_step(
    ops: Any,
    layers: list[tuple[Array, Array]],
    cost: Array,
    X: Array,
    Y: Array,
    learning_rate: float,
    ws: Workspace,
    bind: bool = True,
) -> None:
    """One gradient-descent step, in place: ``layers`` [(W, b), ...] are updated, ``cost`` set.

    The same arithmetic as ``training.train_step``; the order below is what makes updating in
    place safe (layer l's dA_prev is taken from W_l before W_l changes). ``bind=False`` skips
    pointing cuBLAS at the current stream and ``ws`` (done already, outside a capture).
    """
    blas, k = ops.blas, ops.kernels
    if bind:
        blas.bind(ws)
    L, m, lr = len(layers), X.shape[1], learning_rate
    A = X
    for layer in range(1, L):
        W, b = layers[layer - 1]
        Z = ws.acts[layer]
        blas.gemm(Z, W, A)
        k.bias_relu(Z, b, Z)  # A = max(Z + b, 0), in place
        A = Z
    W, b = layers[L - 1]
    dZ = ws.dz[L]
    blas.gemm(dZ, W, A)  # ZL without its bias; the kernel below adds it
    k.output_layer(dZ, b, Y, m, dZ, ws.loss)  # dZL = (sigmoid(ZL) - Y) / m; cost terms / m
    blas.total(cost, ws.loss, ws.ones)
    for layer in range(L, 0, -1):
        W, b = layers[layer - 1]
        A_prev = X if layer == 1 else ws.acts[layer - 1]
        dZ = ws.dz[layer]
        if layer > 1:  # the input layer's dA is never needed
            blas.gemm(ws.dz[layer - 1], W.T, dZ)  # dA_prev from W before its update
        blas.gemm(W, dZ, A_prev.T, alpha=-lr, beta=1.0)  # W <- W - lr dZ A_prev^T
        blas.rowsum(b, dZ, ws.ones, alpha=-lr, beta=1.0)  # b <- b - lr sum(dZ, axis=1)
        if layer > 1:
            k.relu_mask(ws.dz[layer - 1], A_prev, ws.dz[layer - 1])


def packed_address(ops: Any, parameters: dict[str, Array], layout: Layout) -> int | None:
    """The address of a flat buffer laid out as ``layout`` holding exactly ``parameters``.

    True for the dicts this module hands out (so a parameter copy is one memcpy); None for
    anything else, which is then copied array by array.
    """
    first = parameters[layout.keys[0]]
    item = layout.dtype.itemsize
    start = ops.ptr(first) - layout.offsets[0] * item
    low, high = ops.owner_range(first)
    if start < low or start + layout.span * item > high:
        return None
    for key, off, shape in zip(layout.keys, layout.offsets, layout.shapes, strict=True):
        p = parameters[key]
        if tuple(p.shape) != shape or not p.flags.c_contiguous:
            return None
        if ops.ptr(p) != start + off * item or ops.owner_range(p) != (low, high):
            return None
    return start


def copy_parameters(ops: Any, flat: Array, parameters: dict[str, Array], layout: Layout) -> None:
    """Write ``parameters`` into the flat buffer ``flat`` (one memcpy when already packed)."""
    src = packed_address(ops, parameters, layout)
    if src is not None:
        dst = ops.ptr(flat)
        if src != dst:
            ops.copy_bytes(dst, src, layout.span * layout.dtype.itemsize)
        return
    item, views = layout.dtype.itemsize, layout.views(flat)
    for key, off in zip(layout.keys, layout.offsets, strict=True):
        p, view = parameters[key], views[key]
        if p.flags.c_contiguous and p.dtype == layout.dtype:  # a memcpy, not a kernel
            ops.copy_bytes(ops.ptr(flat) + off * item, ops.ptr(p), p.size * item)
        else:
            view[...] = p


def eager_step(
    ops: Any,
    layout: Layout,
    parameters: dict[str, Array],
    X: Array,
    Y: Array,
    learning_rate: float,
    ws: Workspace,
) -> tuple[dict[str, Array], Array]:
    """The fused step without a graph: copy into a fresh flat buffer, update it in place."""
    out = ops.xp.empty((layout.size,), dtype=layout.dtype)
    copy_parameters(ops, out, parameters, layout)
    run_step(ops, layout.layers(out), layout.cost(out), X, Y, learning_rate, ws)
    return layout.views(out), layout.cost(out)


# --------------------------------------------------------------------------------------
# BLAS: planned calls on raw pointers (cuBLAS), or plain array calls (fallback)
# --------------------------------------------------------------------------------------


def gemm_args(
    c: Array, a: Array, b: Array, ptr: Callable[[Array], int]
) -> tuple[int, int, int, int, int, int, int, int, int, int, int]:
    """Column-major GEMM arguments computing the row-major, C-contiguous ``c = a @ b``.

    Returns (op_1, op_2, m, n, k, ptr_1, ld_1, ptr_2, ld_2, ptr_c, ld_c). Seen column-major,
    c's memory holds c^T = b^T a^T, so operand 1 is b and operand 2 is a; a C-contiguous
    matrix is its own transpose stored column-major (no op), an F-contiguous one needs op T.
    """
    M, K = a.shape
    N = b.shape[1]
    op_1, ld_1 = (OP_N, N) if b.flags.c_contiguous else (OP_T, K)
    op_2, ld_2 = (OP_N, K) if a.flags.c_contiguous else (OP_T, M)
    return op_1, op_2, N, M, K, ptr(b), ld_1, ptr(a), ld_2, ptr(c), N


def rowsum_args(
    y: Array, a: Array, ones: Array, ptr: Callable[[Array], int]
) -> tuple[int, int, int, int, int, int, int, int, int]:
    """Column-major GEMV arguments for ``y = a @ ones`` (a's row sums) into contiguous y.

    Returns (op, m, n, ptr_a, lda, ptr_x, incx, ptr_y, incy).
    """
    rows, cols = a.shape
    if a.flags.c_contiguous:  # stored column-major as a^T (cols x rows)
        return OP_T, cols, rows, ptr(a), cols, ptr(ones), 1, ptr(y), 1
    return OP_N, rows, cols, ptr(a), rows, ptr(ones), 1, ptr(y), 1


class PlannedBlas:
    """GEMM/GEMV on raw pointers, given a library with ``gemm``, ``gemv`` and ``bind``."""

    capturable = True

    def __init__(self, lib: Any, ptr: Callable[[Array], int], workspace_bytes: int = 0):
        self.lib, self.ptr, self.workspace_bytes = lib, ptr, workspace_bytes

    def workspace(self, xp: Any) -> Array | None:
        if not self.workspace_bytes:
            return None
        return xp.empty((self.workspace_bytes,), dtype=xp.uint8)

    def bind(self, ws: Workspace) -> None:
        self.lib.bind(ws.blas)

    def gemm(self, c: Array, a: Array, b: Array, alpha: float = 1.0, beta: float = 0.0) -> None:
        """c = alpha a @ b + beta c."""
        op_1, op_2, m, n, k, p1, ld1, p2, ld2, pc, ldc = gemm_args(c, a, b, self.ptr)
        self.lib.gemm(c.dtype, op_1, op_2, m, n, k, alpha, p1, ld1, p2, ld2, beta, pc, ldc)

    def rowsum(self, y: Array, a: Array, ones: Array, alpha: float, beta: float) -> None:
        """y = alpha a.sum(axis=1) + beta y."""
        op, m, n, pa, lda, px, incx, py, incy = rowsum_args(y, a, ones, self.ptr)
        self.lib.gemv(y.dtype, op, m, n, alpha, pa, lda, px, incx, beta, py, incy)

    def total(self, y: Array, a: Array, ones: Array) -> None:
        """y (0-d) = sum of every element of the contiguous array a."""
        size = a.size
        self.lib.gemv(
            y.dtype, OP_T, size, 1, 1.0, self.ptr(a), size, self.ptr(ones), 1, 0.0, self.ptr(y), 1
        )


class ArrayBlas:
    """The same operations as plain array calls (no graph capture): the fallback."""

    capturable = False

    def __init__(self, xp: Any):
        self.xp = xp

    def workspace(self, xp: Any) -> None:
        return None

    def bind(self, ws: Workspace) -> None:
        pass

    def gemm(self, c: Array, a: Array, b: Array, alpha: float = 1.0, beta: float = 0.0) -> None:
        if beta == 0.0:
            self.xp.matmul(a, b, out=c)
            if alpha != 1.0:
                c *= alpha
        else:  # run_step only updates with beta = 1: c + (-lr) t rounds as the generic c - lr t
            c[...] = beta * c + alpha * (a @ b)

    def rowsum(self, y: Array, a: Array, ones: Array, alpha: float, beta: float) -> None:
        y[...] = y + alpha * self.xp.sum(a, axis=1, keepdims=True)

    def total(self, y: Array, a: Array, ones: Array) -> None:
        y[...] = self.xp.sum(a)


# --------------------------------------------------------------------------------------
# The CUDA pieces: kernels, cuBLAS through ctypes, graph capture
# --------------------------------------------------------------------------------------

# (inputs, outputs, body) of each fused kernel; CuPy compiles them for float32 and float64.
# The body mirrors the generic step's NumPy expressions; --fmad=false keeps each rounding.
KERNELS = {
    "bias_relu": (
        "T z, T bias",
        "T act",
        # max(z + b, 0), NaN passing through as in xp.maximum
        "const T s = z + bias; act = s < (T)0 ? (T)0 : s;",
    ),
    "output_layer": (
        "T zl, T bias, T label, T count, T limit",
        "T dz, T loss",
        # kernels.sigmoid (|Z| capped where e^-|Z| would leave the normal range), then
        # dZL = (AL - Y) / m, and the cost term logaddexp(ZL, 0) - Y ZL over m, which stays
        # finite when AL rounds to 0 or 1. NaN goes through every branch, as in NumPy.
        "const T s = zl + bias;"
        " const T a = fabs(s);"
        " const T e = exp(-(a > limit ? limit : a));"
        " const T p = s >= (T)0 ? (T)1 / ((T)1 + e) : e / ((T)1 + e);"
        " const T lae = (s > (T)0 ? s : (T)0) + log1p(exp(-a));"
        " dz = (p - label) / count;"
        " loss = (lae - label * s) / count;",
    ),
    "relu_mask": (
        "T grad, T act",
        "T dz",
        "dz = act > (T)0 ? grad : (T)0;",
    ),
}
KERNEL_OPTIONS = ("--fmad=false",)


def sigmoid_limit(dtype: Any) -> float:
    """Where kernels.sigmoid caps |Z|: beyond it e^-|Z| would no longer be a normal number."""
    return -math.log(np.finfo(dtype).smallest_normal)


class CudaKernels:
    """The fused elementwise kernels as CuPy ElementwiseKernels (compiled on first use)."""

    def __init__(self, cp: Any):
        for name, (ins, outs, body) in KERNELS.items():
            kernel = cp.ElementwiseKernel(
                ins, outs, body, name=f"deepnet_{name}", options=KERNEL_OPTIONS
            )
            setattr(self, f"_{name}", kernel)

    def bias_relu(self, z: Array, bias: Array, out: Array) -> None:
        self._bias_relu(z, bias, out)

    def output_layer(
        self, zl: Array, bias: Array, label: Array, count: int, dz: Array, loss: Array
    ) -> None:
        t = zl.dtype.type
        self._output_layer(zl, bias, label, t(count), t(sigmoid_limit(zl.dtype)), dz, loss)

    def relu_mask(self, grad: Array, act: Array, out: Array) -> None:
        self._relu_mask(grad, act, out)


class CublasLib:
    """cuBLAS through ctypes, on a handle of our own: usable while a stream is capturing."""

    _SUFFIX = {
        np.dtype(np.float32): ("S", ctypes.c_float),
        np.dtype(np.float64): ("D", ctypes.c_double),
    }

    def __init__(self, lib: ctypes.CDLL, current_stream_ptr: Callable[[], int]):
        self._stream_ptr = current_stream_ptr
        p, i, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
        lib.cublasCreate_v2.argtypes = [ctypes.POINTER(p)]
        lib.cublasDestroy_v2.argtypes = [p]
        lib.cublasSetStream_v2.argtypes = [p, p]
        self._set_workspace = getattr(lib, "cublasSetWorkspace_v2", None)
        if self._set_workspace is not None:
            self._set_workspace.argtypes = [p, p, sz]
        self._gemm, self._gemv, self._scalar = {}, {}, {}
        for dtype, (letter, scalar) in self._SUFFIX.items():
            s = ctypes.POINTER(scalar)
            gemm = getattr(lib, f"cublas{letter}gemm_v2")
            gemm.argtypes = [p, i, i, i, i, i, s, p, i, p, i, s, p, i]
            gemv = getattr(lib, f"cublas{letter}gemv_v2")
            gemv.argtypes = [p, i, i, i, s, p, i, p, i, s, p, i]
            self._gemm[dtype], self._gemv[dtype], self._scalar[dtype] = gemm, gemv, scalar
        for fn in (lib.cublasCreate_v2, lib.cublasDestroy_v2, lib.cublasSetStream_v2):
            fn.restype = ctypes.c_int
        for fn in (*self._gemm.values(), *self._gemv.values()):
            fn.restype = ctypes.c_int
        if self._set_workspace is not None:
            self._set_workspace.restype = ctypes.c_int
        self._lib = lib
        handle = p()
        _check(lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
        self._handle = handle
        # Destroy with the thread's state, but not at interpreter exit (the context may be gone).
        weakref.finalize(self, lib.cublasDestroy_v2, handle).atexit = False

    def bind(self, workspace: Array | None) -> None:
        """Work on the current stream, with ``workspace`` (set after the stream: it resets it)."""
        _check(self._lib.cublasSetStream_v2(self._handle, self._stream_ptr()), "cublasSetStream")
        if workspace is not None and self._set_workspace is not None:
            status = self._set_workspace(self._handle, workspace.data.ptr, workspace.nbytes)
            _check(status, "cublasSetWorkspace")

    def gemm(self, dtype, op_1, op_2, m, n, k, alpha, p1, ld1, p2, ld2, beta, pc, ldc) -> None:
        scalar = self._scalar[dtype]
        status = self._gemm[dtype](
            self._handle, op_1, op_2, m, n, k, ctypes.byref(scalar(alpha)),
            p1, ld1, p2, ld2, ctypes.byref(scalar(beta)), pc, ldc,
        )  # fmt: skip
        _check(status, "gemm")

    def gemv(self, dtype, op, m, n, alpha, pa, lda, px, incx, beta, py, incy) -> None:
        scalar = self._scalar[dtype]
        status = self._gemv[dtype](
            self._handle, op, m, n, ctypes.byref(scalar(alpha)),
            pa, lda, px, incx, ctypes.byref(scalar(beta)), py, incy,
        )  # fmt: skip
        _check(status, "gemv")


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"cuBLAS {what} failed with status {status}")


def find_cublas(cuda_major: int | None = None) -> ctypes.CDLL | None:
    """The cuBLAS library CuPy loaded (or the wheel's, or the system's); None if not found."""
    majors = [cuda_major] if cuda_major else []
    names = [f"libcublas.so.{v}" for v in (*majors, 13, 12, 11)]
    noload = getattr(os, "RTLD_NOLOAD", None)
    if noload is not None:
        for name in names:  # already in the process: the one CuPy uses
            try:
                return ctypes.CDLL(name, mode=noload | os.RTLD_NOW)
            except OSError:
                pass
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib  # noqa: PLC0415  (CuPy >= 14)

        return ctypes.CDLL(load_nvidia_dynamic_lib("cublas").abs_path)
    except Exception:  # not installed, not found, or a different API
        pass
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            pass
    return None


class CudaOps:
    """Everything :func:`run_step` needs, on one GPU."""

    def __init__(self, cp: Any):
        self.xp = cp
        self.kernels = _cuda_kernels(cp)
        self.blas: PlannedBlas | ArrayBlas = ArrayBlas(cp)
        try:
            cp.cuda.device.get_cublas_handle()  # makes CuPy load its cuBLAS first
            lib = find_cublas(cp.cuda.runtime.runtimeGetVersion() // 1000)
            if lib is not None:
                cublas = CublasLib(lib, lambda: cp.cuda.get_current_stream().ptr)
                self.blas = PlannedBlas(cublas, self.ptr, _CUBLAS_WORKSPACE_BYTES)
        except Exception as exc:  # unexpected library: keep the plain CuPy calls
            warnings.warn(
                f"deepnet: cuBLAS could not be bound directly ({exc}); the CUDA step uses "
                "CuPy's matmul and no CUDA graphs",
                RuntimeWarning,
                stacklevel=4,
            )

    @staticmethod
    def ptr(a: Array) -> int:
        return a.data.ptr

    @staticmethod
    def owner_range(a: Array) -> tuple[int, int]:
        mem = a.data.mem
        return mem.ptr, mem.ptr + mem.size

    def copy_bytes(self, dst: int, src: int, nbytes: int) -> None:
        rt = self.xp.cuda.runtime
        stream = self.xp.cuda.get_current_stream().ptr
        rt.memcpyAsync(dst, src, nbytes, rt.memcpyDeviceToDevice, stream)


@functools.cache
def _cuda_kernels(cp: Any) -> CudaKernels:
    return CudaKernels(cp)


class GraphStep:
    """The step for one (X, Y, learning rate, stream), captured once and replayed.

    It owns a static flat parameter buffer and its scratch, allocated from a private memory
    pool that nothing else uses, so the addresses baked into the graph stay valid. Each step
    copies the parameters in (one memcpy), replays, and copies the result out to a fresh
    buffer, so callers see the same value semantics as the generic step.
    """

    def __init__(self, ops: CudaOps, layout: Layout, X: Array, Y: Array, lr: float, stream: Any):
        cp = ops.xp
        self.ops, self.layout, self.X, self.Y, self.lr = ops, layout, X, Y, lr
        self.stream_ptr = stream.ptr
        self.pool = cp.cuda.MemoryPool()
        with cp.cuda.using_allocator(self.pool.malloc):
            self.flat = cp.empty((layout.size,), dtype=layout.dtype)
            self.ws = Workspace(ops, layout)
        self.layers, self.cost = layout.layers(self.flat), layout.cost(self.flat)
        self.graph: Any = None
        self.built = False

    def matches(self, layout: Layout, X: Array, Y: Array, lr: float, stream_ptr: int) -> bool:
        return (
            self.X is X
            and self.Y is Y
            and self.lr == lr
            and self.layout == layout
            and self.stream_ptr == stream_ptr
        )

    def _run(self, bind: bool = True) -> None:
        run_step(self.ops, self.layers, self.cost, self.X, self.Y, self.lr, self.ws, bind)

    def step(self, parameters: dict[str, Array]) -> tuple[dict[str, Array], Array]:
        copy_parameters(self.ops, self.flat, parameters, self.layout)
        if self.graph is not None:
            self.graph.launch()
        elif not self.built:
            self._build()  # its warm-up run is this step
        else:  # capture failed earlier: the same step, launched kernel by kernel
            self._run()
        out = self.flat.copy()
        return self.layout.views(out), self.layout.cost(out)

    def _build(self) -> None:
        """Run the step once on a side stream (compiles kernels, sizes cuBLAS), then capture it."""
        self.built = True
        cp = self.ops.xp
        current = cp.cuda.get_current_stream()
        side = cp.cuda.Stream(non_blocking=True)  # the legacy stream can't capture
        side.wait_event(current.record())
        try:
            with cp.cuda.using_allocator(self.pool.malloc), side:
                self._run()  # also binds cuBLAS to the side stream and this workspace
                try:
                    self.graph = _capture(side, lambda: self._run(bind=False))
                except Exception as exc:
                    warnings.warn(
                        f"deepnet: CUDA graph capture failed ({type(exc).__name__}: {exc}); "
                        "the fused step runs without a graph",
                        RuntimeWarning,
                        stacklevel=5,
                    )
        finally:
            current.wait_event(side.record())
        self._side = side


def _capture(stream: Any, body: Callable[[], None]) -> Any:
    stream.begin_capture()
    try:
        body()
    except BaseException:
        with contextlib.suppress(Exception):  # ends the capture; the body's error is the news
            stream.end_capture()
        raise
    graph = stream.end_capture()
    upload = getattr(graph, "upload", None)
    if upload is not None:
        upload(stream)
    return graph


# --------------------------------------------------------------------------------------
# Per-thread state: the CUDA ops per device, the last graph, the eager scratch
# --------------------------------------------------------------------------------------


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self._ops: dict[int, CudaOps] = {}
        self.clear()

    def clear(self) -> None:
        self.graph: GraphStep | None = None
        self.seen: tuple | None = None  # (X, Y, lr, layout, stream) of the last eager step
        self.scratch: tuple | None = None  # ((layout, stream, device), Workspace)
        self.checked: tuple | None = None  # (parameters, X, Y, layout) from accepts()

    def ops(self, cp: Any, device_id: int) -> CudaOps:
        if device_id not in self._ops:
            self._ops[device_id] = CudaOps(cp)
        return self._ops[device_id]

    def step(
        self, ops: CudaOps, layout: Layout, parameters: dict, X: Array, Y: Array, lr: float
    ) -> tuple[dict[str, Array], Array]:
        stream = ops.xp.cuda.get_current_stream()
        use_graphs = ops.blas.capturable and _switched_on(GRAPHS_ENV)
        graph = self.graph
        if use_graphs and graph is not None and graph.matches(layout, X, Y, lr, stream.ptr):
            return graph.step(parameters)
        seen = self.seen
        if use_graphs and seen is not None and _same(seen, (X, Y, lr, layout, stream.ptr)):
            # The same data a second time in a row: a full-batch loop. Capture it.
            self.graph = self.seen = None  # free the old graph's buffers first
            self.graph = GraphStep(ops, layout, X, Y, lr, stream)
            return self.graph.step(parameters)
        self.seen = (X, Y, lr, layout, stream.ptr) if use_graphs else None
        key = (layout, stream.ptr, _device_id(X))
        if self.scratch is None or self.scratch[0] != key:
            self.scratch = None
            self.scratch = (key, Workspace(ops, layout))
        return eager_step(ops, layout, parameters, X, Y, lr, self.scratch[1])


def _same(a: tuple, b: tuple) -> bool:
    return a[0] is b[0] and a[1] is b[1] and a[2:] == b[2:]


_THREAD_STATE = _ThreadState()


def _state() -> _ThreadState:
    return _THREAD_STATE


def _cupy() -> Any:
    return cupy_module()
