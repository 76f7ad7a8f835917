"""The fused gradient-descent step, written against a small set of operations.

``ops`` provides ``xp`` (the array module), ``kernels`` (:mod:`deepnet.cuda.kernels`),
``blas`` (:mod:`deepnet.cuda.blas`), ``ptr``, ``owner_range`` and ``copy_bytes``. On a GPU
these are CUDA's (:class:`deepnet.cuda.dispatch.CudaOps`); the CPU tests supply host ones,
so the step's logic runs there too. The step computes what ``training.train_step``
computes, updating one flat parameter buffer (:mod:`deepnet.cuda.layout`) in place.
"""

from __future__ import annotations

from typing import Any

from deepnet.cuda.layout import Layout

Array = Any


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
