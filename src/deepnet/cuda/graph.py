"""CUDA graph capture of the fused step, for a full-batch loop.

When the same (X, Y, learning rate) come back on the same stream, the whole step is
captured once as a CUDA graph and replayed: one launch per iteration. Capture needs the
cuBLAS calls of :mod:`deepnet.cuda.blas` (CuPy's own cuBLAS calls refuse to be captured).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any

from deepnet.cuda.layout import Layout
from deepnet.cuda.step import Workspace, copy_parameters, run_step

Array = Any


class GraphStep:
    """The step for one (X, Y, learning rate, stream), captured once and replayed.

    It owns a static flat parameter buffer and its scratch, allocated from a private memory
    pool that nothing else uses, so the addresses baked into the graph stay valid. Each step
    copies the parameters in (one memcpy), replays, and copies the result out to a fresh
    buffer, so callers see the same value semantics as the generic step.
    """

    def __init__(self, ops: Any, layout: Layout, X: Array, Y: Array, lr: float, stream: Any):
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
                    self.graph = capture(side, lambda: self._run(bind=False))
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


def capture(stream: Any, body: Callable[[], None]) -> Any:
    """Record ``body`` on ``stream`` into a CUDA graph (uploaded when CuPy can), and return it."""
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
