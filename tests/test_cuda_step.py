"""The CUDA fast path's logic, checked on the CPU (no GPU needed).

``deepnet.cuda`` runs its step against a small set of operations. Here those run on the
host: a column-major BLAS working on raw pointers exactly as cuBLAS does on device pointers
(so the row-major -> cuBLAS argument planning is exercised for real), NumPy mirrors of the
fused kernels, and memmove for device copies. The kernels' CUDA bodies themselves are compiled
as C++ with g++ and compared with the generic step's NumPy expressions.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deepnet.cuda import blas as cblas
from deepnet.cuda import dispatch
from deepnet.cuda import kernels as ckernels
from deepnet.cuda import layout as clayout
from deepnet.cuda import step as cstep
from deepnet.errors import InputError
from deepnet.initialization import draw_parameters
from deepnet.kernels import sigmoid
from deepnet.training import train_step

_CTYPE = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}


def colmajor(ptr: int, dtype: np.dtype, rows: int, cols: int, ld: int) -> np.ndarray:
    """A writable (rows x cols) view of column-major memory at a raw host address."""
    dtype = np.dtype(dtype)
    extent = ld * (cols - 1) + rows
    raw = np.frombuffer((_CTYPE[dtype] * extent).from_address(ptr), dtype=dtype)
    return np.lib.stride_tricks.as_strided(
        raw, shape=(rows, cols), strides=(dtype.itemsize, ld * dtype.itemsize)
    )


class Tape:
    """Runs operations now, or records them while a stream 'captures' (replayed by launch)."""

    def __init__(self):
        self.recording = None

    def do(self, fn, *args):
        if self.recording is None:
            fn(*args)
        else:
            self.recording.append((fn, args))


class HostBlasLib:
    """Reference column-major GEMM/GEMV on raw host pointers (what cuBLAS does on the GPU)."""

    def __init__(self, tape):
        self.tape = tape

    def bind(self, workspace):
        assert self.tape.recording is None, "cuBLAS rebound while a stream is capturing"

    def gemm(self, *args):
        self.tape.do(self._gemm, *args)

    def gemv(self, *args):
        self.tape.do(self._gemv, *args)

    def _gemm(self, dtype, op_1, op_2, m, n, k, alpha, p1, ld1, p2, ld2, beta, pc, ldc):
        A = colmajor(p1, dtype, *((m, k) if op_1 == cblas.OP_N else (k, m)), ld1)
        B = colmajor(p2, dtype, *((k, n) if op_2 == cblas.OP_N else (n, k)), ld2)
        C = colmajor(pc, dtype, m, n, ldc)
        assert ld1 >= A.shape[0] and ld2 >= B.shape[0] and ldc >= m  # cuBLAS's own rules
        opA = A if op_1 == cblas.OP_N else A.T
        opB = B if op_2 == cblas.OP_N else B.T
        result = alpha * (opA @ opB)
        C[...] = result if beta == 0 else result + beta * C  # beta = 0: C is never read

    def _gemv(self, dtype, op, m, n, alpha, pa, lda, px, incx, beta, py, incy):
        assert incx == 1 and incy == 1 and lda >= m
        A = colmajor(pa, dtype, m, n, lda)
        x = colmajor(px, dtype, n if op == cblas.OP_N else m, 1, 1)[:, 0]
        y = colmajor(py, dtype, m if op == cblas.OP_N else n, 1, 1)[:, 0]
        result = alpha * ((A if op == cblas.OP_N else A.T) @ x)
        y[...] = result if beta == 0 else result + beta * y


class HostKernels:
    """NumPy mirrors of ckernels.KERNELS (the g++ test checks the CUDA bodies themselves)."""

    def __init__(self, tape):
        self.tape = tape

    def bias_relu(self, *args):
        self.tape.do(self._bias_relu, *args)

    def output_layer(self, *args):
        self.tape.do(self._output_layer, *args)

    def relu_mask(self, *args):
        self.tape.do(self._relu_mask, *args)

    def _bias_relu(self, z, bias, out):
        out[...] = np.maximum(z + bias, 0.0)

    def _output_layer(self, zl, bias, label, count, dz, loss):
        s = zl + bias
        p, _ = sigmoid(s)
        terms = np.logaddexp(s, 0.0) - label * s
        dz[...] = (p - label) / count
        loss[...] = terms / count

    def _relu_mask(self, grad, act, out):
        out[...] = np.where(act > 0, grad, 0.0)


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


class HostOps:
    """The operations run_step needs, on the host; ``blas`` is planned (raw pointers) or plain."""

    def __init__(self, blas: str):
        self.tape = Tape()
        self.xp = FakeCupy(self.tape)
        self.kernels = HostKernels(self.tape)
        if blas == "planned":
            self.blas = cblas.PlannedBlas(HostBlasLib(self.tape), self.ptr, workspace_bytes=64)
        else:
            self.blas = cblas.ArrayBlas(np)

    @staticmethod
    def ptr(a):
        return a.__array_interface__["data"][0]

    @staticmethod
    def owner_range(a):
        root = _root(a)
        start = root.__array_interface__["data"][0]
        return start, start + root.nbytes

    @staticmethod
    def copy_bytes(dst, src, nbytes):
        ctypes.memmove(dst, src, nbytes)


class FakeStream:
    """A CUDA stream as GraphStep uses it; capture records onto the tape."""

    def __init__(self, tape, ptr, fail_capture=False):
        self.tape, self.ptr, self.fail_capture = tape, ptr, fail_capture

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def record(self):
        return object()

    def wait_event(self, event):
        pass

    def begin_capture(self):
        if self.fail_capture:
            raise RuntimeError("capture not supported here")
        self.tape.recording = []

    def end_capture(self):
        recorded, self.tape.recording = self.tape.recording, None
        return FakeGraph(recorded)


class FakeGraph:
    def __init__(self, recorded):
        self.recorded, self.launches = recorded, 0

    def launch(self):
        self.launches += 1
        for fn, args in self.recorded:  # replayed on the memory as it is now, like a graph
            fn(*args)


class FakeCuda:
    def __init__(self, tape):
        self.tape, self.fail_capture = tape, False
        self.current = FakeStream(tape, 0)
        self.MemoryPool = lambda: type("Pool", (), {"malloc": None})()
        self.using_allocator = lambda malloc: contextlib.nullcontext()

    def Stream(self, non_blocking=False):  # CuPy's name
        return FakeStream(self.tape, 1000 + id(self) % 1000, self.fail_capture)

    def get_current_stream(self):
        return self.current


class FakeCupy:
    """NumPy for arrays, plus the cupy.cuda pieces GraphStep touches."""

    def __init__(self, tape):
        self.cuda = FakeCuda(tape)

    def __getattr__(self, name):
        return getattr(np, name)


def make_problem(dims, dtype, order="C", seed=0):
    """Random data and parameters for a model with layer sizes ``dims``."""
    rng = np.random.RandomState(seed)
    X = np.asarray(rng.rand(dims[0], 13) - 0.3, dtype=dtype, order=order)
    Y = np.asarray(rng.rand(1, 13) > 0.5, dtype=dtype)
    params = {k: (v * 20).astype(dtype) for k, v in draw_parameters(dims, "small", 3).items()}
    params = {k: v + np.asarray(rng.randn(*v.shape) * 0.1, dtype=dtype) for k, v in params.items()}
    return params, X, Y


TOL = {np.float64: dict(rtol=1e-12, atol=1e-15), np.float32: dict(rtol=2e-5, atol=1e-7)}
MODELS = [(5, 1), (6, 4, 1), (9, 7, 5, 3, 1)]


@pytest.mark.parametrize("blas", ["planned", "array"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("dims", MODELS, ids=lambda d: "x".join(map(str, d)))
@pytest.mark.parametrize("order", ["C", "F"])
def test_fused_step_matches_generic_step(blas, dtype, dims, order):
    params, X, Y = make_problem(dims, dtype, order)
    before = {k: v.copy() for k, v in params.items()}
    ops = HostOps(blas)
    layout = clayout.layout_of(params, X, Y)
    assert layout is not None
    got, cost = cstep.eager_step(ops, layout, params, X, Y, 0.05, cstep.Workspace(ops, layout))
    want, want_cost = train_step(params, X, Y, 0.05)
    assert list(got) == list(want)
    for key in want:
        assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape
        np.testing.assert_allclose(got[key], want[key], **TOL[dtype], err_msg=key)
        np.testing.assert_array_equal(params[key], before[key])  # inputs untouched
    assert cost.shape == () and cost.dtype == dtype
    np.testing.assert_allclose(cost, want_cost, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_chained_steps_track_the_generic_loop(dtype):
    """Twenty steps, each fed the previous step's (packed) output, as a fit does."""
    params, X, Y = make_problem((8, 6, 3, 1), dtype)
    ops = HostOps("planned")
    layout = clayout.layout_of(params, X, Y)
    ws = cstep.Workspace(ops, layout)
    fused, generic = params, params
    for _ in range(20):
        assert cstep.packed_address(ops, fused, layout) is not None or fused is params
        fused, cost = cstep.eager_step(ops, layout, fused, X, Y, 0.1, ws)
        generic, want = train_step(generic, X, Y, 0.1)
        np.testing.assert_allclose(cost, want, **TOL[dtype])
    for key in generic:
        np.testing.assert_allclose(fused[key], generic[key], **TOL[dtype], err_msg=key)


def test_packed_parameters_are_recognised_and_others_are_not():
    params, X, Y = make_problem((6, 4, 1), np.float64)
    ops = HostOps("planned")
    layout = clayout.layout_of(params, X, Y)
    out, _ = cstep.eager_step(ops, layout, params, X, Y, 0.1, cstep.Workspace(ops, layout))
    assert cstep.packed_address(ops, out, layout) == ops.ptr(out["W1"])
    assert cstep.packed_address(ops, params, layout) is None  # separate arrays
    mixed = dict(out, b2=out["b2"].copy())
    assert cstep.packed_address(ops, mixed, layout) is None
    other = clayout.layout_for((6, 4, 1), "<f8", 99)  # same shapes, other batch: same spans
    assert cstep.packed_address(ops, out, other) is not None
    bigger = clayout.layout_for((6, 5, 1), "<f8", 13)
    assert cstep.packed_address(ops, dict(out, W1=np.zeros((5, 6))), bigger) is None


def test_copy_parameters_copies_values_not_references():
    params, X, Y = make_problem((6, 4, 1), np.float64)
    ops = HostOps("planned")
    layout = clayout.layout_of(params, X, Y)
    first, _ = cstep.eager_step(ops, layout, params, X, Y, 0.1, cstep.Workspace(ops, layout))
    flat = np.full(layout.size, np.nan)
    cstep.copy_parameters(ops, flat, first, layout)  # the one-memcpy path
    for key, view in layout.views(flat).items():
        np.testing.assert_array_equal(view, first[key])
    first["W2"][...] = 7.0  # a caller editing in place is seen by the next copy
    cstep.copy_parameters(ops, flat, first, layout)
    assert (layout.views(flat)["W2"] == 7.0).all()
    # separate arrays: C-contiguous ones by memcpy, the others (here W1, F-ordered) by assignment
    separate = dict(params, W1=np.asfortranarray(params["W1"]))
    cstep.copy_parameters(ops, flat, separate, layout)
    for key, view in layout.views(flat).items():
        np.testing.assert_array_equal(view, params[key])


@pytest.mark.parametrize("dtype", ["<f4", "<f8"])
def test_layout_is_aligned_and_disjoint(dtype):
    layout = clayout.layout_for((12288, 20, 7, 5, 1), dtype, 209)
    item = np.dtype(dtype).itemsize
    spans = []
    for off, (rows, cols) in zip(layout.offsets, layout.shapes, strict=True):
        assert (off * item) % 256 == 0
        spans.append((off, off + rows * cols))
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert layout.cost_offset >= spans[-1][1] and layout.size == layout.cost_offset + 1
    assert layout.keys == ("W1", "b1", "W2", "b2", "W3", "b3", "W4", "b4")


@pytest.mark.parametrize(("ashape", "aorder"), [((3, 5), "C"), ((3, 5), "F"), ((1, 5), "C")])
@pytest.mark.parametrize(("bshape", "border"), [((5, 4), "C"), ((5, 4), "F"), ((5, 1), "F")])
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 0.0), (-0.25, 1.0)])
def test_gemm_args_compute_row_major_products(ashape, aorder, bshape, border, alpha, beta):
    rng = np.random.RandomState(1)
    a = np.asarray(rng.randn(*ashape), order=aorder)
    b = np.asarray(rng.randn(*bshape), order=border)
    c = rng.randn(ashape[0], bshape[1])
    want = alpha * (a @ b) + beta * c
    HostOps("planned").blas.gemm(c, a, b, alpha=alpha, beta=beta)
    np.testing.assert_allclose(c, want, rtol=1e-13)


@pytest.mark.parametrize("order", ["C", "F"])
def test_rowsum_and_total_args(order):
    rng = np.random.RandomState(2)
    a = np.asarray(rng.randn(4, 7), order=order)
    ones = np.ones(28)
    y = rng.randn(4, 1)
    want = y - 0.5 * a.sum(axis=1, keepdims=True)
    blas = HostOps("planned").blas
    blas.rowsum(y, a, ones, alpha=-0.5, beta=1.0)
    np.testing.assert_allclose(y, want, rtol=1e-13)
    total = np.zeros(())
    blas.total(total, np.ascontiguousarray(a), ones)
    np.testing.assert_allclose(total, a.sum(), rtol=1e-13)


def _fit_like(state, ops, params, X, Y, lr, steps):
    """Chain ``steps`` steps through a _ThreadState, as fit() does; all outputs kept."""
    layout = clayout.layout_of(params, X, Y)
    outs = []
    for _ in range(steps):
        params, cost = state.step(ops, layout, params, X, Y, lr)
        outs.append(({k: v.copy() for k, v in params.items()}, params, float(cost)))
    return outs


def _generic_chain(params, X, Y, lr, steps):
    outs = []
    for _ in range(steps):
        params, cost = train_step(params, X, Y, lr)
        outs.append((params, float(cost)))
    return outs


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_full_batch_loop_captures_once_and_replays(dtype):
    params, X, Y = make_problem((9, 7, 5, 1), dtype)
    ops, state = HostOps("planned"), dispatch.ThreadState()
    outs = _fit_like(state, ops, params, X, Y, 0.1, 8)
    want = _generic_chain(params, X, Y, 0.1, 8)
    graph = state.graph.graph
    assert graph is not None and graph.launches == 6  # step 1 eager, step 2 captures
    for i, ((snapshot, live, cost), (w, wcost)) in enumerate(zip(outs, want, strict=True)):
        np.testing.assert_allclose(cost, wcost, **TOL[dtype], err_msg=f"step {i}")
        for key in w:
            np.testing.assert_allclose(snapshot[key], w[key], **TOL[dtype], err_msg=key)
            # what a step returned is still what it was after later steps (value semantics)
            np.testing.assert_array_equal(live[key], snapshot[key])


def test_new_data_or_learning_rate_leave_the_graph_alone():
    params, X, Y = make_problem((6, 4, 1), np.float64)
    ops, state = HostOps("planned"), dispatch.ThreadState()
    _fit_like(state, ops, params, X, Y, 0.1, 3)
    first = state.graph
    X2 = X.copy()
    outs = _fit_like(state, ops, params, X2, Y, 0.1, 1)  # other data: one eager step
    assert state.graph is first and first.graph.launches == 1
    np.testing.assert_allclose(outs[0][2], float(train_step(params, X2, Y, 0.1)[1]))
    _fit_like(state, ops, params, X, Y, 0.2, 2)  # a new learning rate twice: a new graph
    assert state.graph is not first and state.graph.lr == 0.2


def test_graphs_switched_off(monkeypatch):
    monkeypatch.setenv(dispatch.GRAPHS_ENV, "0")
    params, X, Y = make_problem((6, 4, 1), np.float64)
    ops, state = HostOps("planned"), dispatch.ThreadState()
    outs = _fit_like(state, ops, params, X, Y, 0.1, 4)
    assert state.graph is None and state.seen is None
    want = _generic_chain(params, X, Y, 0.1, 4)
    np.testing.assert_allclose([o[2] for o in outs], [w[1] for w in want], rtol=1e-12)


def test_capture_failure_falls_back_with_a_warning():
    params, X, Y = make_problem((6, 4, 1), np.float64)
    ops, state = HostOps("planned"), dispatch.ThreadState()
    ops.xp.cuda.fail_capture = True
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed"):
        outs = _fit_like(state, ops, params, X, Y, 0.1, 5)
    assert state.graph is not None and state.graph.graph is None
    want = _generic_chain(params, X, Y, 0.1, 5)
    np.testing.assert_allclose([o[2] for o in outs], [w[1] for w in want], rtol=1e-12)
    for key in want[-1][0]:
        np.testing.assert_allclose(outs[-1][0][key], want[-1][0][key], rtol=1e-12)


def test_array_blas_never_captures():
    params, X, Y = make_problem((6, 4, 1), np.float64)
    ops, state = HostOps("array"), dispatch.ThreadState()
    _fit_like(state, ops, params, X, Y, 0.1, 3)
    assert state.graph is None


def test_numpy_arrays_never_take_the_cuda_path():
    params, X, Y = make_problem((6, 4, 1), np.float64)
    assert not dispatch.accepts(params, X, Y)
    with pytest.raises(InputError, match="use deepnet.training.train_step"):
        dispatch.cuda_train_step(params, X, Y, 0.1)


@pytest.mark.parametrize(
    "spoil",
    [
        lambda p, X, Y: (p, X.astype(np.float32), Y),  # mixed dtypes
        lambda p, X, Y: ({**p, "W1": p["W1"][:, :-1]}, X, Y),  # shapes don't chain
        lambda p, X, Y: ({k: v for k, v in p.items() if k != "b2"}, X, Y),  # a missing bias
        lambda p, X, Y: (p, X[:, ::2], Y[:, ::2]),  # X neither C- nor F-contiguous
        lambda p, X, Y: (p, X[:, :0], Y[:, :0]),  # no examples
        lambda p, X, Y: (p, X.astype(np.float16), Y.astype(np.float16)),  # unsupported dtype
    ],
)
def test_steps_the_fast_path_leaves_to_the_generic_one(spoil):
    params, X, Y = make_problem((6, 4, 1), np.float64)
    assert clayout.layout_of(params, X, Y) is not None
    assert clayout.layout_of(*spoil(params, X, Y)) is None


def test_importing_the_module_does_not_import_cupy():
    code = (
        "import sys, deepnet.training, deepnet.cuda, deepnet.allreduce, deepnet.cuda.batches;"
        " print('cupy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- the CUDA kernel bodies, compiled as C++ ------------------------------------------


def _kernel_library(tmp_path: Path) -> ctypes.CDLL:
    """Each KERNELS body inside a C loop, for double and float, as one shared library."""
    lines = ["#include <cmath>", "using namespace std;"]
    for name, (ins, outs, body) in ckernels.KERNELS.items():
        inputs = [p.split()[1] for p in ins.split(",")]
        outputs = [p.split()[1] for p in outs.split(",")]
        for ctype, suffix in (("double", "d"), ("float", "f")):
            args = [f"const {ctype}* {n}_" for n in inputs] + [f"{ctype}* {n}_" for n in outputs]
            binds = [f"const T {n} = {n}_[i_];" for n in inputs]
            binds += [f"T& {n} = {n}_[i_];" for n in outputs]
            lines += [
                f'extern "C" void {name}_{suffix}(long n_, {", ".join(args)}) {{',
                f"  typedef {ctype} T;",
                "  for (long i_ = 0; i_ < n_; ++i_) {",
                "    " + " ".join(binds),
                f"    {body}",
                "  }",
                "}",
            ]
    source = tmp_path / "kernels.cpp"
    source.write_text("\n".join(lines) + "\n")
    lib = tmp_path / "kernels.so"
    # -ffp-contract=off: no fused multiply-add, like the kernels' --fmad=false
    cmd = ["g++", "-O1", "-ffp-contract=off", "-shared", "-fPIC", str(source), "-o", str(lib)]
    subprocess.run(cmd, check=True, capture_output=True)
    return ctypes.CDLL(str(lib))


def _call(lib, name, dtype, inputs, n_out):
    suffix = "d" if dtype == np.float64 else "f"
    shape = np.broadcast_shapes(*(np.shape(a) for a in inputs))
    ins = [np.ascontiguousarray(np.broadcast_to(np.asarray(a, dtype), shape)) for a in inputs]
    outs = [np.empty(shape, dtype) for _ in range(n_out)]
    fn = getattr(lib, f"{name}_{suffix}")
    fn(ctypes.c_long(int(np.prod(shape))), *(a.ctypes.data_as(ctypes.c_void_p) for a in ins + outs))
    return outs


@pytest.fixture(scope="module")
def kernel_lib(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: the CUDA kernel bodies can't be compiled as C++ here")
    return _kernel_library(tmp_path_factory.mktemp("kernels"))


EDGES = [0.0, -0.0, 1e-300, -1e-300, 0.3, -0.3, 5.0, -5.0, 40.0, -40.0, 800.0, -800.0,
         np.inf, -np.inf, np.nan]  # fmt: skip


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_bodies_compute_the_generic_expressions(kernel_lib, dtype):
    rng = np.random.RandomState(4)
    z = np.concatenate([np.asarray(EDGES), rng.randn(200) * 10]).astype(dtype)[None, :]
    b = np.asarray([[0.0], [0.7], [-2.5]], dtype)  # broadcast over the columns
    y = (rng.rand(1, z.shape[1]) > 0.5).astype(dtype)
    grad = rng.randn(3, z.shape[1]).astype(dtype)
    tol = dict(rtol=4e-15 if dtype == np.float64 else 2e-6, atol=0)
    with np.errstate(invalid="ignore", over="ignore"):
        (act,) = _call(kernel_lib, "bias_relu", dtype, [z, b], 1)
        np.testing.assert_array_equal(act, np.maximum(z + b, 0.0))

        limit = ckernels.sigmoid_limit(dtype)
        dz, loss = _call(kernel_lib, "output_layer", dtype, [z, b, y, 209.0, limit], 2)
        s = z + b
        p, _ = sigmoid(s)
        np.testing.assert_allclose(dz, (p - y) / 209, **tol)
        np.testing.assert_allclose(loss, (np.logaddexp(s, 0.0) - y * s) / 209, **tol)

        (masked,) = _call(kernel_lib, "relu_mask", dtype, [grad, act], 1)
        np.testing.assert_array_equal(masked, np.where(act > 0, grad, 0.0))
    assert dz.dtype == dtype and np.isnan(act).any()  # NaN goes through, as in xp.maximum


def test_supports_names_what_the_fused_step_computes():
    assert dispatch.supports()  # ReLU hidden layers, sigmoid output, plain gradient descent
    assert dispatch.supports("ReLU", "sigmoid", type("GD", (), {"name": "gd"})())
    assert not dispatch.supports(hidden="tanh")
    assert not dispatch.supports(output="softmax")
    assert not dispatch.supports(optimizer="adam")
