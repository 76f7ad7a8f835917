"""BLAS for the fused step: cuBLAS on raw pointers (through ctypes), or plain array calls.

CuPy refuses cuBLAS calls while a stream is capturing (cupy/cupy#6290), so the GEMMs and
GEMVs go to cuBLAS through ctypes, on a handle and a workspace of our own. The row-major
arrays are mapped to cuBLAS's column-major arguments by :func:`gemm_args` and
:func:`rowsum_args`, which the CPU tests check against a host BLAS on raw pointers.
:class:`ArrayBlas` is the fallback where the library can't be bound (no graphs then).
"""

from __future__ import annotations

import ctypes
import os
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

Array = Any
OP_N, OP_T = 0, 1  # cublasOperation_t
CUBLAS_WORKSPACE_BYTES = 32 * 2**20  # what cuBLAS asks for on Hopper


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

    def bind(self, ws: Any) -> None:
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

    def bind(self, ws: Any) -> None:
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
        from cuda.pathfinder import load_nvidia_dynamic_lib  # CuPy >= 14

        return ctypes.CDLL(load_nvidia_dynamic_lib("cublas").abs_path)
    except Exception:  # not installed, not found, or a different API
        pass
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            pass
    return None
