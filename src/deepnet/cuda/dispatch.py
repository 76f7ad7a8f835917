"""The CUDA fast path's public face: which steps it takes, and per-thread state.

``training.train_step`` asks :func:`accepts` and hands CuPy steps to
:func:`cuda_train_step`. Nothing here crosses the host-device boundary: no synchronisation,
no copies to the host. Two environment switches are read at every step (for benchmarks and
debugging): ``DEEPNET_CUDA_FAST=0`` sends CuPy arrays down the generic path, and
``DEEPNET_CUDA_GRAPHS=0`` keeps the fused step but never captures a graph.
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import Any

import array_api_compat

from deepnet.backend import cupy_module
from deepnet.cuda.blas import CUBLAS_WORKSPACE_BYTES, ArrayBlas, CublasLib, PlannedBlas, find_cublas
from deepnet.cuda.graph import GraphStep
from deepnet.cuda.kernels import cuda_kernels
from deepnet.cuda.layout import Layout, device_id, layout_of
from deepnet.cuda.step import Workspace, eager_step
from deepnet.errors import InputError

Array = Any
FAST_ENV = "DEEPNET_CUDA_FAST"
GRAPHS_ENV = "DEEPNET_CUDA_GRAPHS"
HIDDEN_ACTIVATIONS = ("relu",)
OUTPUT_ACTIVATIONS = ("sigmoid",)
OPTIMIZERS = ("gd",)


def switched_on(name: str) -> bool:
    """False when the environment variable ``name`` says 0, false, no or off."""
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "no", "off")


def supports(hidden: Any = "relu", output: Any = "sigmoid", optimizer: Any = "gd") -> bool:
    """True when the fused kernels compute this network and update: anything else is generic.

    The fused step is ReLU hidden layers, a sigmoid output with the cross-entropy cost, and
    plain gradient descent (``W <- W - lr dW``, no momentum, decay or dropout). Each argument
    is a name or an object with a ``name`` attribute (a spec's activation, an optimizer).
    """

    def name(x: Any) -> str:
        return str(getattr(x, "name", x)).lower()

    return (
        name(hidden) in HIDDEN_ACTIVATIONS
        and name(output) in OUTPUT_ACTIVATIONS
        and name(optimizer) in OPTIMIZERS
    )


def accepts(parameters: dict[str, Array], X: Array, Y: Array) -> bool:
    """True when :func:`cuda_train_step` should take this step (CuPy float arrays that fit).

    Cheap, and never imports CuPy: NumPy and array-api-strict arrays answer False at once.
    """
    if not array_api_compat.is_cupy_array(X) or not switched_on(FAST_ENV):
        return False
    layout = layout_of(parameters, X, Y)
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
        layout = layout_of(parameters, X, Y) if array_api_compat.is_cupy_array(X) else None
    if layout is None:
        raise InputError(
            "cuda_train_step needs CuPy arrays on one GPU, all float32 or all float64: "
            "X (n_x, m) C- or F-contiguous with m >= 1, Y (1, m), and W1, b1, ..., WL, bL "
            "whose shapes chain from n_x; use deepnet.training.train_step for anything else"
        )
    cp = cupy_module()
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


class CudaOps:
    """Everything :func:`deepnet.cuda.step.run_step` needs, on one GPU."""

    def __init__(self, cp: Any):
        self.xp = cp
        self.kernels = cuda_kernels(cp)
        self.blas: PlannedBlas | ArrayBlas = ArrayBlas(cp)
        try:
            cp.cuda.device.get_cublas_handle()  # makes CuPy load its cuBLAS first
            lib = find_cublas(cp.cuda.runtime.runtimeGetVersion() // 1000)
            if lib is not None:
                cublas = CublasLib(lib, lambda: cp.cuda.get_current_stream().ptr)
                self.blas = PlannedBlas(cublas, self.ptr, CUBLAS_WORKSPACE_BYTES)
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


class ThreadState(threading.local):
    """This thread's CUDA ops per device, its last captured graph and its eager scratch."""

    def __init__(self) -> None:
        self._ops: dict[int, CudaOps] = {}
        self.clear()

    def clear(self) -> None:
        self.graph: GraphStep | None = None
        self.seen: tuple | None = None  # (X, Y, lr, layout, stream) of the last eager step
        self.scratch: tuple | None = None  # ((layout, stream, device), Workspace)
        self.checked: tuple | None = None  # (parameters, X, Y, layout) from accepts()

    def ops(self, cp: Any, gpu: int) -> CudaOps:
        if gpu not in self._ops:
            self._ops[gpu] = CudaOps(cp)
        return self._ops[gpu]

    def step(
        self, ops: CudaOps, layout: Layout, parameters: dict, X: Array, Y: Array, lr: float
    ) -> tuple[dict[str, Array], Array]:
        stream = ops.xp.cuda.get_current_stream()
        use_graphs = ops.blas.capturable and switched_on(GRAPHS_ENV)
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
        key = (layout, stream.ptr, device_id(X))
        if self.scratch is None or self.scratch[0] != key:
            self.scratch = None
            self.scratch = (key, Workspace(ops, layout))
        return eager_step(ops, layout, parameters, X, Y, lr, self.scratch[1])


def _same(a: tuple, b: tuple) -> bool:
    return a[0] is b[0] and a[1] is b[1] and a[2:] == b[2:]


_THREAD_STATE = ThreadState()


def _state() -> ThreadState:
    return _THREAD_STATE
