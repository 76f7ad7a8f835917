"""Out-of-core training: same results as in memory, bounded memory, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from deepnet.errors import DataError, DivergenceError, InputError, ShapeError
from deepnet.initialization import draw_parameters
from deepnet.streaming import (
    BatchStream,
    _Reader,
    fit_stream,
    main,
    make_synthetic,
    open_course_file,
    train_stream,
)
from deepnet.training import L_layer_model, TrainState, fit, like, prepare

SHAPE = (8, 8, 3)  # small pictures keep the arithmetic cheap; the I/O paths are the same
DIMS = [192, 6, 3, 1]


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    """300 synthetic 8x8x3 images in the course's layout."""
    return make_synthetic(
        tmp_path_factory.mktemp("data") / "small.h5", 300, seed=3, image_shape=SHAPE
    )


def in_memory(path, x_key="train_set_x", y_key="train_set_y"):
    """The file loaded whole, as in-memory training sees it: pixels / 255, one column each."""
    with h5py.File(path) as f:
        x, y = f[x_key][:], f[y_key][:]
    return prepare(x.reshape(len(x), -1).T / 255.0, y.reshape(1, -1), "cpu", "float64")


@pytest.mark.parametrize("prefetch", [True, False], ids=["read-ahead", "inline"])
@pytest.mark.parametrize("batch_size", [64, 100])
def test_minibatches_match_in_memory_fit_bit_for_bit(small_file, batch_size, prefetch):
    X, Y = in_memory(small_file.path)
    start = like(draw_parameters(DIMS, "lecun", 1), X)
    kw = dict(learning_rate=0.01, num_iterations=3, batch_size=batch_size, seed=5, record_every=1)
    want = fit(X, Y, TrainState(start), **kw)
    got = fit_stream(small_file.path, TrainState(dict(start)), prefetch=prefetch, **kw)
    assert got.costs == want.costs
    for key in start:
        np.testing.assert_array_equal(got.parameters[key], want.parameters[key])
    assert got.iteration == want.iteration == 3


@pytest.mark.parametrize("batch_size", [None, 10_000], ids=["None", "larger-than-m"])
def test_full_batch_adds_up_chunk_gradients(small_file, batch_size):
    X, Y = in_memory(small_file.path)
    start = like(draw_parameters(DIMS, "lecun", 1), X)
    kw = dict(learning_rate=0.01, num_iterations=4, batch_size=batch_size, record_every=1)
    want = fit(X, Y, TrainState(start), **kw)
    got = fit_stream(small_file.path, TrainState(dict(start)), chunk_size=128, **kw)
    np.testing.assert_allclose(got.costs, want.costs, rtol=0, atol=1e-13)
    for key in start:
        np.testing.assert_allclose(got.parameters[key], want.parameters[key], rtol=0, atol=1e-13)


@pytest.mark.parametrize("reg", [(0.5, 1.0), (0.3, 0.7)], ids=["l2", "l2-dropout"])
def test_minibatches_with_l2_and_dropout_match_in_memory_fit(small_file, reg):
    X, Y = in_memory(small_file.path)
    start = like(draw_parameters(DIMS, "lecun", 1), X)
    kw = dict(learning_rate=0.01, num_iterations=3, batch_size=64, seed=5, record_every=1,
              lambd=reg[0], keep_prob=reg[1])  # fmt: skip
    want = fit(X, Y, TrainState(start), **kw)
    got = fit_stream(small_file.path, TrainState(dict(start)), **kw)
    assert got.costs == want.costs  # the same steps on the same batches, masks included
    for key in start:
        np.testing.assert_array_equal(got.parameters[key], want.parameters[key])


@pytest.mark.parametrize("reg", [(0.6, 1.0), (0.4, 0.7)], ids=["l2", "l2-dropout"])
def test_full_batch_adds_l2_once_and_cuts_the_dropout_masks(small_file, reg):
    """Chunks of 128 of 300 examples: L2 added once to their sum, each chunk with its
    columns of the full batch's masks; the in-memory run to rounding."""
    X, Y = in_memory(small_file.path)
    start = like(draw_parameters(DIMS, "lecun", 1), X)
    kw = dict(learning_rate=0.01, num_iterations=4, record_every=1, lambd=reg[0],
              keep_prob=reg[1], seed=3)  # fmt: skip
    want = fit(X, Y, TrainState(start), gram=False, **kw)
    got = fit_stream(small_file.path, TrainState(dict(start)), chunk_size=128, **kw)
    np.testing.assert_allclose(got.costs, want.costs, rtol=0, atol=1e-13)
    for key in start:
        np.testing.assert_allclose(got.parameters[key], want.parameters[key], rtol=0, atol=1e-13)
    if reg[1] < 1:  # the masks matter: another seed is another run
        other = fit_stream(small_file.path, TrainState(dict(start)), chunk_size=128,
                           **{**kw, "seed": 4})  # fmt: skip
        assert other.costs[1] != got.costs[1]


def test_resumes_like_fit(small_file):
    X, Y = in_memory(small_file.path)
    start = like(draw_parameters(DIMS, "lecun", 1), X)
    kw = dict(learning_rate=0.01, batch_size=64, seed=2, record_every=1)
    want = fit(X, Y, TrainState(start), num_iterations=4, **kw)
    half = fit_stream(small_file.path, TrainState(dict(start)), num_iterations=2, **kw)
    got = fit_stream(small_file.path, half, num_iterations=4, **kw)
    assert got.costs == want.costs


def test_reads_chunked_compressed_files_too(tmp_path, small_file):
    """A layout that cannot be read with pread goes through h5py's sorted fancy indexing."""
    path = tmp_path / "chunked.h5"
    with h5py.File(small_file.path) as src, h5py.File(path, "w") as dst:
        dst.create_dataset("train_set_x", data=src["train_set_x"][:], chunks=(7, *SHAPE),
                           compression="gzip")  # fmt: skip
        dst.create_dataset("train_set_y", data=src["train_set_y"][:], chunks=(50,))
    X, Y = in_memory(path)
    start = like(draw_parameters(DIMS, "lecun", 1), X)
    kw = dict(learning_rate=0.01, num_iterations=2, batch_size=64, seed=5, record_every=1)
    want = fit(X, Y, TrainState(start), **kw)
    got = fit_stream(path, TrainState(dict(start)), **kw)
    assert got.costs == want.costs


def test_batch_stream_yields_the_planned_examples_in_order(small_file):
    X, Y = in_memory(small_file.path)
    rng = np.random.default_rng(0)
    plan = [rng.permutation(300)[:37], np.arange(250, 300), np.array([5, 3, 4, 299, 0])]
    with BatchStream(small_file, iter(plan), max_batch=50, like=X) as stream:
        for idx in plan:
            got_idx, Xb, Yb = stream.next()
            np.testing.assert_array_equal(got_idx, idx)
            np.testing.assert_array_equal(Xb, X[:, idx])
            np.testing.assert_array_equal(Yb, Y[:, idx])
            assert Xb.flags.f_contiguous  # example-major, like fit's batches of deepnet.data


def test_synthetic_file_has_the_course_layout_and_is_reproducible(tmp_path):
    a = make_synthetic(tmp_path / "a.h5", 1500, seed=7)
    b = make_synthetic(tmp_path / "b.h5", 1500, seed=7)
    assert (a.m, a.n_x, a.x_key, a.y_key) == (1500, 12288, "train_set_x", "train_set_y")
    with h5py.File(a.path) as fa, h5py.File(b.path) as fb:
        assert fa["train_set_x"].shape == (1500, 64, 64, 3)
        assert fa["train_set_x"].dtype == np.uint8
        assert fa["train_set_y"].shape == (1500,)
        assert list(fa["list_classes"][:]) == [b"non-cat", b"cat"]
        np.testing.assert_array_equal(fa["train_set_x"][:], fb["train_set_x"][:])
        y = fa["train_set_y"][:]
        brightness = fa["train_set_x"][:].reshape(1500, -1).mean(axis=1)
    assert 0.4 < y.mean() < 0.6
    # Learnable: cats are brighter on average, by the 64 levels added to them.
    assert brightness[y == 1].mean() - brightness[y == 0].mean() == pytest.approx(64, abs=1)


def test_train_stream_learns_the_synthetic_task(small_file):
    _, costs = train_stream(
        small_file.path, [192, 4, 1], learning_rate=0.2, num_iterations=6, batch_size=32,
        record_every=1,
    )  # fmt: skip
    assert costs[-1] < costs[0] - 0.1


def _peak(path, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "deepnet.streaming", "train", str(path),
           "--layers", "12288,4,1", "--batch-size", "128", "--iterations", "1"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_peak_memory_does_not_grow_with_the_file(tmp_path):
    small = make_synthetic(tmp_path / "s.h5", 1000, seed=1)
    large = make_synthetic(tmp_path / "l.h5", 6000, seed=1)
    a, b = _peak(small.path, tmp_path), _peak(large.path, tmp_path)
    file_growth = b["file_bytes"] - a["file_bytes"]  # 61 MB more uint8 pixels
    memory_growth = b["peak_rss_bytes"] - a["peak_rss_bytes"]
    # Loading the larger file into memory would take 8x its pixels in float64 (480 MB more).
    assert memory_growth < 0.1 * file_growth, (a, b)
    assert len(b["costs"]) == 1 and np.isfinite(b["costs"][0])


def test_missing_file_and_wrong_layout_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_course_file(tmp_path / "nope.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="not a readable HDF5"):
        open_course_file(tmp_path / "text.h5")
    with h5py.File(tmp_path / "float.h5", "w") as f:
        f["train_set_x"] = np.zeros((4, 64, 64, 3), np.float32)
        f["train_set_y"] = np.zeros(4, np.int64)
    with pytest.raises(DataError, match="uint8"):
        open_course_file(tmp_path / "float.h5")
    with h5py.File(tmp_path / "nolabels.h5", "w") as f:
        f["train_set_x"] = np.zeros((4, 64, 64, 3), np.uint8)
    with pytest.raises(DataError, match="_set_y"):
        open_course_file(tmp_path / "nolabels.h5")


def test_bad_labels_raise_from_the_reader_thread(tmp_path):
    path = tmp_path / "labels.h5"
    with h5py.File(path, "w") as f:
        f["train_set_x"] = np.zeros((40, *SHAPE), np.uint8)
        f["train_set_y"] = np.full(40, 2, np.int64)
    with pytest.raises(DataError, match="0 or 1"):
        train_stream(path, [192, 2, 1], num_iterations=2, batch_size=8)


def test_bad_arguments(small_file):
    state = TrainState(like(draw_parameters([100, 2, 1], "lecun", 1), np.zeros((1, 1))))
    with pytest.raises(ShapeError, match="192 values"):
        fit_stream(small_file, state, learning_rate=0.1, num_iterations=1)
    with pytest.raises(InputError, match="batch_size"):
        train_stream(small_file, DIMS, num_iterations=1, batch_size=0)
    with pytest.raises(InputError, match="learning_rate"):
        train_stream(small_file, DIMS, num_iterations=1, learning_rate=-1.0)


def test_divergence_stops_the_reader_and_keeps_finite_parameters(small_file):
    with pytest.raises(DivergenceError) as info, np.errstate(all="ignore"):
        train_stream(  # full batch: iteration 0 is finite, its step sends the weights to inf
            small_file, [192, 4, 1], learning_rate=1e308, num_iterations=20, record_every=1,
            chunk_size=128,
        )  # fmt: skip
    err = info.value
    assert err.iteration == 1 and len(err.costs) == 1 and np.isfinite(err.costs[0])
    assert all(np.isfinite(v).all() for v in err.parameters.values())


def test_real_data_streams_like_in_memory(real_data_dir):
    path = real_data_dir / "train_catvnoncat.h5"
    X, Y = in_memory(path)
    kw = dict(learning_rate=0.0075, num_iterations=3, batch_size=64, record_every=1)
    _, want = L_layer_model(X, Y, [12288, 20, 7, 5, 1], **kw)
    _, got = train_stream(path, [12288, 20, 7, 5, 1], **kw)
    assert got == want


def test_a_truncated_file_is_a_data_error(tmp_path):
    path = make_synthetic(tmp_path / "cut.h5", 200, seed=1, image_shape=SHAPE).path
    source = open_course_file(path)
    with h5py.File(path) as f:
        end = f["train_set_x"].id.get_offset() + 200 * 192
    reader = _Reader(source, max_batch=50)  # opened while the file was whole
    with open(path, "r+b") as f:  # then cut inside the last images' pixels
        f.truncate(end - 100 * 192)
    try:
        with pytest.raises(DataError, match="truncated"):
            reader.read(np.arange(150, 200), np.empty((50, 192), np.uint8))
    finally:
        reader.close()
    with pytest.raises(DataError, match="truncated"):  # HDF5 itself notices at opening
        train_stream(source, [192, 2, 1], num_iterations=1, batch_size=50)


def test_command_line_makes_a_file_and_reports_errors_without_a_traceback(tmp_path, capsys):
    assert main(["make-synthetic", str(tmp_path / "c.h5"), "--n", "10"]) == 0
    assert json.loads(capsys.readouterr().out)["m"] == 10
    assert main(["train", str(tmp_path / "missing.h5")]) == 2
    assert "not found" in capsys.readouterr().err
