"""Batches streamed to a GPU (deepnet.cuda.batches): fit's values in fit's layout.

On the CPU the uploads run against a NumPy stand-in for CuPy that records the stream
events, so the conversion, the layout and the event order are checked here; the
cuda-marked tests run the real thing and compare streamed training with fit, bit for bit.
"""

from __future__ import annotations

import types

import h5py
import numpy as np
import pytest

from deepnet.backend import cuda_available
from deepnet.cuda.batches import CudaBatches
from deepnet.initialization import draw_parameters
from deepnet.streaming import BatchStream, _Reader, fit_stream, make_synthetic
from deepnet.training import TrainState, fit, like, prepare, take_columns

SHAPE = (8, 8, 3)
DIMS = [192, 6, 3, 1]


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    return make_synthetic(
        tmp_path_factory.mktemp("data") / "small.h5", 120, seed=7, image_shape=SHAPE
    )


def in_memory(path, device="cpu", dtype="float64"):
    """The file as fit sees it: pixels / 255, one column each (example-major)."""
    with h5py.File(path) as f:
        x, y = f["train_set_x"][:], f["train_set_y"][:]
    return prepare(x.reshape(len(x), -1).T / 255.0, y.reshape(1, -1), device, dtype)


class DevArray(np.ndarray):
    """A NumPy array with CuPy's ``set`` (the host-to-device copy)."""

    def __array_finalize__(self, obj):
        self.log = getattr(obj, "log", None)

    def set(self, host, stream=None):
        self.log.append(("copy", stream.name))
        self[...] = host


class Stream:
    def __init__(self, log, name):
        self.log, self.name, self.n = log, name, 0

    def record(self):
        self.n += 1
        event = f"{self.name}#{self.n}"
        self.log.append(("record", event))
        return event

    def wait_event(self, event):
        self.log.append((f"{self.name} waits", event))


def fake_cupy(log):
    compute = Stream(log, "compute")
    cuda = types.SimpleNamespace(
        Stream=lambda non_blocking=False: Stream(log, "copy"),
        get_current_stream=lambda: compute,
        alloc_pinned_memory=bytearray,
    )

    def empty(n, dtype):
        a = np.empty(n, dtype).view(DevArray)
        a.log = log
        return a

    return types.SimpleNamespace(cuda=cuda, empty=empty, uint8=np.uint8)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_uploads_are_fits_batches_bit_for_bit(small_file, dtype):
    log: list = []
    X, Y = in_memory(small_file.path, dtype=dtype)
    reader = _Reader(small_file, 50)
    try:
        batches = CudaBatches(reader, 50, np, np.dtype(dtype), cupy=fake_cupy(log))
        released = []
        for idx in (np.arange(40, 90), np.array([7, 3, 119, 0])):
            buf = batches.buffer()
            _, rows, y, _ = batches.produce(idx, buf)
            Xb, Yb = batches.upload(rows, y, released.append)
            want = take_columns(np, X, idx)
            assert Xb.flags.f_contiguous and want.flags.f_contiguous  # fit's layout
            assert Xb.dtype == want.dtype and Xb.shape == want.shape
            np.testing.assert_array_equal(Xb, want)
            np.testing.assert_array_equal(Yb, np.take(Y, idx, axis=1))
    finally:
        reader.close()
    assert released == ["copy#1", "copy#2"]  # each pinned buffer freed by its copy's event


def test_copies_wait_for_the_slot_they_overwrite(small_file):
    log: list = []
    reader = _Reader(small_file, 10)
    try:
        batches = CudaBatches(reader, 10, np, np.dtype("float64"), cupy=fake_cupy(log))
        for start in (0, 10, 20):
            _, rows, y, _ = batches.produce(np.arange(start, start + 10), batches.buffer())
            batches.upload(rows, y, lambda event: None)
    finally:
        reader.close()
    # batch 3 reuses batch 1's slot: its copy waits for batch 1's conversion to be done
    copies = [i for i, entry in enumerate(log) if entry == ("copy", "copy")]
    waits = [i for i, entry in enumerate(log) if entry[0] == "copy waits"]
    assert len(copies) == 3 and waits == [copies[2] - 1]  # only the third copy waits...
    assert log[waits[0]] == ("copy waits", "compute#1")  # ...for batch 1's conversion
    assert ("compute waits", "copy#3") in log  # and the step waits for the copy


# --------------------------------------------------------------------------- on a GPU


@pytest.fixture(scope="module")
def cp():
    if not cuda_available():
        pytest.skip("streaming to a GPU: needs CuPy and a usable CUDA GPU (none here)")
    from deepnet.backend import cupy_module

    return cupy_module()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_batch_stream_on_a_gpu_gives_fits_batches(cp, small_file, dtype):
    X, _ = in_memory(small_file.path, "cuda", dtype)
    plan = iter([np.arange(0, 50), np.array([5, 1, 100])])
    with BatchStream(small_file, plan, max_batch=50, like=X) as stream:
        for _ in range(2):
            idx, Xb, _ = stream.next()
            want = take_columns(cp, X, cp.asarray(idx))
            assert Xb.flags.f_contiguous and want.flags.f_contiguous
            np.testing.assert_array_equal(Xb.get(), want.get())


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("prefetch", [True, False], ids=["read-ahead", "inline"])
def test_streamed_minibatches_match_fit_on_a_gpu_bit_for_bit(cp, small_file, dtype, prefetch):
    X, Y = in_memory(small_file.path, "cuda", dtype)
    assert X.flags.f_contiguous  # fit's data on the GPU keep the course's layout
    start = like(draw_parameters(DIMS, "lecun", 1), X)
    kw = dict(learning_rate=0.01, num_iterations=3, batch_size=32, seed=5, record_every=1)
    want = fit(X, Y, TrainState(start), **kw)
    got = fit_stream(small_file.path, TrainState(dict(start)), prefetch=prefetch, **kw)
    assert got.costs == want.costs
    for key in start:
        np.testing.assert_array_equal(got.parameters[key].get(), want.parameters[key].get())
