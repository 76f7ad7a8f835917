"""Loading the cat data: the course layout, its preprocessing, every way a file can be wrong."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from deepnet.constants import IMAGE_SHAPE
from deepnet.data import (
    FILES,
    N_FEATURES,
    data_dir,
    load_cat_data,
    load_dataset,
    load_picture,
    pixel_scale,
    preprocess,
    real_data_found,
)
from deepnet.errors import DataError, InputError
from deepnet.hdf5 import read_split
from deepnet.hdf5_rows import RowReader, open_course_file, read_range
from deepnet.kernels import accuracy, predict
from deepnet.training import L_layer_model, two_layer_model

CLASSES = np.array([b"non-cat", b"cat"], dtype="S7")


def pictures(m: int, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, size=(m, 64, 64, 3)).astype(np.uint8)


DEFAULT, MISSING = object(), object()


def write_split(folder: Path, split: str, x=DEFAULT, y=DEFAULT, classes=CLASSES, m=4, edit=None):
    """A tiny file in the course's layout; any dataset can be swapped for a broken one (or
    left out with MISSING), and ``edit(file)`` can change the file further."""
    folder.mkdir(parents=True, exist_ok=True)
    x = pictures(m, seed=len(split)) if x is DEFAULT else x
    y = (np.arange(m) % 2).astype(np.int64) if y is DEFAULT else y
    with h5py.File(folder / FILES[split], "w") as f:
        for key, value in ((f"{split}_set_x", x), (f"{split}_set_y", y), ("list_classes", classes)):
            if value is not MISSING:
                f.create_dataset(key, data=value)
        if edit is not None:
            edit(f)
    return folder / FILES[split]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder with a valid tiny train (4 pictures) and test (3 pictures) pair."""
    write_split(tmp_path, "train", m=4)
    write_split(tmp_path, "test", m=3)
    return tmp_path


def test_loads_and_preprocesses_as_the_course(folder: Path):
    data = load_dataset(folder)
    with h5py.File(folder / FILES["train"]) as f:
        raw, labels = f["train_set_x"][()], f["train_set_y"][()]
    assert data.train_x.shape == (N_FEATURES, 4) and data.test_x.shape == (N_FEATURES, 3)
    assert data.train_y.shape == (1, 4) and data.test_y.shape == (1, 3)
    assert data.train_x.dtype == np.float64
    np.testing.assert_array_equal(data.train_x, raw.reshape(4, -1).T / 255.0)
    # C order: feature (row * 64 + column) * 3 + channel of each column is that pixel / 255.
    assert data.train_x[(5 * 64 + 7) * 3 + 2, 1] == raw[1, 5, 7, 2] / 255.0
    np.testing.assert_array_equal(data.train_y[0], labels)
    assert data.classes == ("non-cat", "cat")
    assert data.synthetic is False and str(folder) in data.source
    np.testing.assert_array_equal(data.test_images, pictures(3, seed=4))


def test_labels_may_be_stored_as_a_row(tmp_path: Path):
    write_split(tmp_path, "train", y=np.array([[0, 1, 1, 0]]))
    write_split(tmp_path, "test", m=3)
    np.testing.assert_array_equal(load_dataset(tmp_path).train_y, [[0, 1, 1, 0]])


def _write_absurd(f: h5py.File) -> None:
    del f["train_set_x"], f["train_set_y"]
    # 10 million pictures (123 GB) declared; h5py stores nothing until written.
    f.create_dataset("train_set_x", shape=(10_000_000, 64, 64, 3), dtype=np.uint8, chunks=True)
    f.create_dataset("train_set_y", shape=(10_000_000,), dtype=np.int64, chunks=True)


def _group_instead(f: h5py.File) -> None:
    del f["list_classes"]
    f.create_group("list_classes")


BROKEN = {
    "missing key": (dict(y=MISSING), "missing dataset 'train_set_y'"),
    "group, not dataset": (dict(edit=_group_instead), "is a group"),
    "wrong picture shape": (dict(x=np.zeros((4, 32, 32, 3), np.uint8)), "expected (m, 64, 64, 3)"),
    "flat pictures": (dict(x=np.zeros((4, N_FEATURES), np.uint8)), "expected (m, 64, 64, 3)"),
    "string pixels": (dict(x=np.full((4, 64, 64, 3), b"a")), "dtype"),
    "labels do not match": (dict(y=np.array([0, 1, 1])), "one label per picture"),
    "labels outside 0/1": (dict(y=np.array([0, 1, 2, -1])), "2 labels outside {0, 1}"),
    "string labels": (dict(y=np.array([b"a", b"b", b"a", b"b"])), "dtype"),
    "NaN labels": (dict(y=np.array([0.0, np.nan, 1.0, 0.0])), "non-finite labels"),
    "NaN pixels": (dict(x=np.full((4, 64, 64, 3), np.nan)), "non-finite values"),
    "pixels above 255": (dict(x=np.full((4, 64, 64, 3), 300, np.int32)), "expected 0..255"),
    "no examples": (dict(x=np.zeros((0, 64, 64, 3), np.uint8), y=np.zeros(0)), "no examples"),
    "absurd size": (dict(edit=_write_absurd), "holds only 0 bytes"),
    "one class": (dict(classes=np.array([b"cat"])), "two class names"),
    "same class twice": (dict(classes=np.array([b"cat", b"cat"])), "two different names"),
    "numeric classes": (dict(classes=np.array([0, 1])), "two class names"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_file_names_the_file_and_the_problem(tmp_path: Path, case: str):
    changes, expected = BROKEN[case]
    write_split(tmp_path, "train", **changes)
    write_split(tmp_path, "test", m=3)
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path)
    assert str(tmp_path / FILES["train"]) in str(info.value)
    assert expected in str(info.value)


def test_missing_file(tmp_path: Path):
    write_split(tmp_path, "train")
    with pytest.raises(DataError, match=r"test_catvnoncat\.h5: file not found"):
        load_dataset(tmp_path)


def test_not_hdf5_and_truncated_files_give_a_clear_error(folder: Path):
    train = folder / FILES["train"]
    (folder / FILES["test"]).write_text("not an HDF5 file\n")
    with pytest.raises(DataError, match="test_catvnoncat.h5: not a readable HDF5 file"):
        load_dataset(folder)
    train.write_bytes(train.read_bytes()[:5000])  # cut mid-file, as an interrupted download
    write_split(folder, "test", m=3)
    with pytest.raises(DataError, match=r"train_catvnoncat\.h5: not a readable HDF5 file"):
        load_dataset(folder)


def test_classes_must_agree(folder: Path):
    write_split(folder, "test", m=3, classes=np.array([b"dog", b"cat"]))
    with pytest.raises(DataError, match="different classes"):
        load_dataset(folder)


def test_data_folder_comes_from_argument_then_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("DEEPNET_DATA", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("DEEPNET_DATA")
    assert data_dir() is None and not real_data_found()
    with pytest.raises(DataError, match="set DEEPNET_DATA"):
        load_dataset()


def test_load_cat_data_uses_given_data_else_the_synthetic_set(folder: Path, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DEEPNET_DATA", str(folder))
    assert load_cat_data().synthetic is False and real_data_found()
    assert load_cat_data(synthetic=True).synthetic is True
    monkeypatch.setenv("DEEPNET_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="does not exist"):  # a wrong path is not ignored
        load_cat_data()
    monkeypatch.delenv("DEEPNET_DATA")
    data = load_cat_data()
    assert data.synthetic is True and "synthetic" in data.source
    with pytest.raises(InputError):
        load_cat_data(folder, synthetic=True)


def test_preprocess_rejects_wrong_shapes():
    with pytest.raises(InputError, match=r"\(m, 64, 64, 3\)"):
        preprocess(np.zeros((64, 64, 3)))


def test_load_picture_resizes_any_picture_to_64x64_rgb(tmp_path: Path):
    rgba = np.zeros((120, 90, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "red.png")
    Image.fromarray(np.full((30, 50), 77, np.uint8), "L").save(tmp_path / "grey.jpg")
    red = load_picture(tmp_path / "red.png")
    assert red.shape == (64, 64, 3) and red.dtype == np.uint8
    assert (red[..., 0] == 200).all() and (red[..., 1:] == 0).all()
    grey = load_picture(tmp_path / "grey.jpg")
    assert np.abs(grey.astype(int) - 77).max() <= 2  # JPEG is lossy, but only slightly
    X = preprocess(red[None])
    assert X.shape == (N_FEATURES, 1) and X[0, 0] == 200 / 255


def test_load_picture_errors(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="notes.txt: cannot read as a picture"):
        load_picture(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="not found"):
        load_picture(tmp_path / "missing.png")


def test_real_data_loads(real_data_dir: Path):
    data = load_dataset(real_data_dir)
    assert data.train_x.shape == (N_FEATURES, 209) and data.test_x.shape == (N_FEATURES, 50)
    assert data.train_y.sum() == 72 and data.test_y.sum() == 33
    assert data.classes == ("non-cat", "cat") and data.synthetic is False
    assert data.train_x.min() >= 0.0 and data.train_x.max() <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "dims", "init", "expected"),
    [
        (two_layer_model, [N_FEATURES, 7, 1], "small", 0.72),
        (L_layer_model, [N_FEATURES, 20, 7, 5, 1], "lecun", 0.80),
    ],
    ids=["two-layer", "L-layer"],
)
def test_float32_training_on_real_data_reaches_the_course_accuracy(
    real_data_dir: Path, model, dims, init, expected
):
    data = load_dataset(real_data_dir)
    parameters, costs = model(
        data.train_x, data.train_y, dims, num_iterations=2500, dtype="float32", seed=1, init=init
    )
    X_test = data.test_x.astype(np.float32)
    test_accuracy = accuracy(predict(X_test, None, parameters), data.test_y)
    assert parameters["W1"].dtype == np.float32
    assert abs(test_accuracy - expected) <= 1 / 50 + 1e-9  # within one of the 50 test pictures
    assert costs[-1] < 0.15


# --------------------------------------------------------------------------- pixel conventions


def _scaled_folder(tmp_path: Path, x: np.ndarray) -> Path:
    write_split(tmp_path, "train", x=x)
    write_split(tmp_path, "test", m=3)
    return tmp_path


def test_float_pixels_in_0_1_are_not_divided_by_255_again(tmp_path: Path):
    raw = pictures(4, seed=len("train"))
    data = load_dataset(_scaled_folder(tmp_path, raw.astype(np.float32) / 255))
    reference = raw.reshape(4, -1).T / 255.0
    np.testing.assert_allclose(data.train_x, reference, atol=1e-7)  # float32 rounding only
    assert data.train_x.max() > 0.5 and data.pixels == "[0, 1] / 0..255"
    assert "pixels stored as [0, 1]" in data.source
    np.testing.assert_array_equal(data.train_images, raw)  # galleries see 0..255 pictures


def test_float_pixels_in_0_255_are_divided_by_255(tmp_path: Path):
    raw = pictures(4, seed=len("train"))
    data = load_dataset(_scaled_folder(tmp_path, raw.astype(np.float64)))
    np.testing.assert_array_equal(data.train_x, raw.reshape(4, -1).T / 255.0)
    assert data.pixels == "0..255" and "pixels stored" not in data.source


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (np.full((4, 64, 64, 3), -0.5), "from -0.5 to -0.5; expected 0..255 (or floats in [0, 1])"),
        (np.full((4, 64, 64, 3), 300.0), "expected 0..255"),
        (np.full((4, 64, 64, 3), np.inf), "non-finite values"),
    ],
    ids=["negative", "above 255", "infinite"],
)
def test_float_pixels_outside_every_convention_are_refused(tmp_path: Path, x, expected):
    with pytest.raises(DataError, match=r"train_catvnoncat\.h5: train_set_x holds") as info:
        load_dataset(_scaled_folder(tmp_path, x))
    assert expected in str(info.value)


def test_pixel_scale_says_which_convention_it_used():
    assert pixel_scale(np.zeros((1, 64, 64, 3), np.uint8)) == (255.0, "0..255")
    assert pixel_scale(np.full((1, 2), 1.0)) == (1.0, "[0, 1]")
    assert pixel_scale(np.full((1, 2), 1.5)) == (255.0, "0..255")
    assert pixel_scale(np.full((1, 2), 255, np.int64)) == (255.0, "0..255")
    with pytest.raises(InputError, match="from 0 to 256"):
        pixel_scale(np.array([0, 256], np.int64))
    images = np.random.RandomState(0).uniform(0, 1, (2, 64, 64, 3))
    np.testing.assert_array_equal(preprocess(images), images.reshape(2, -1).T)


# --------------------------------------------------------------------------- what the path is


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging) if the block takes longer than ``seconds``."""

    def late(*_: object) -> None:
        raise TimeoutError(f"still running after {seconds} s: blocked?")

    previous = signal.signal(signal.SIGALRM, late)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_folder_that_is_a_file_or_unreadable_says_so(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("DEEPNET_DATA", "/etc/passwd")
    with pytest.raises(DataError, match="data folder /etc/passwd is a file, not a folder"):
        load_cat_data()
    denied = tmp_path / "locked"

    def no_permission(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("deepnet.data.os.stat", no_permission)
    with pytest.raises(DataError, match=f"data folder {denied}: permission denied"):
        load_dataset(denied)


def test_special_and_unreadable_data_files_name_the_real_cause(folder: Path, monkeypatch):
    train = folder / FILES["train"]
    train.unlink()
    train.mkdir()
    with pytest.raises(DataError, match=r"train_catvnoncat\.h5: is a folder, not a regular file"):
        load_dataset(folder)
    train.rmdir()
    os.mkfifo(train)  # never opened: a read would block for ever
    with within(10), pytest.raises(DataError, match=r"\.h5: is a named pipe \(FIFO\), not a"):
        load_dataset(folder)
    train.unlink()
    write_split(folder, "train")
    real_open = os.open

    def denied(path, *args, **kwargs):
        if str(path) == str(train):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("deepnet.hdf5.os.open", denied)  # (tests run as root, where chmod fails)
    with pytest.raises(DataError, match=r"train_catvnoncat\.h5: permission denied \(cannot read"):
        load_dataset(folder)


# --------------------------------------------------------------------------- the row reader


def test_the_row_reader_reads_what_the_split_reader_reads(folder: Path):
    path = folder / FILES["train"]
    split = read_split(path, "train")
    source = open_course_file(path, image_shape=IMAGE_SHAPE)
    assert (source.m, source.n_x, source.classes) == (4, N_FEATURES, ("non-cat", "cat"))
    idx = np.array([3, 0, 2, 1])
    rows = np.empty((4, N_FEATURES), np.uint8)
    with RowReader(source, max_batch=4) as reader:
        labels = reader.read(idx, rows)
    np.testing.assert_array_equal(rows, split.images[idx].reshape(4, -1))
    np.testing.assert_array_equal(labels, split.labels[idx])


def test_the_row_reader_refuses_sparse_and_huge_declarations_before_reading(tmp_path: Path):
    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("train_set_x", shape=(10**7, 64, 64, 3), dtype="u1", chunks=True)
        f.create_dataset("train_set_y", shape=(10**7,), dtype="u1", chunks=True)
    assert path.stat().st_size < 100_000
    with pytest.raises(DataError, match=r"huge\.h5: train_set_x declares .* holds only 0 bytes"):
        open_course_file(path)


def test_the_row_reader_checks_the_file_again_when_it_opens_it(tmp_path: Path):
    path = tmp_path / "swap.h5"
    write_split(tmp_path, "train", m=4)
    (tmp_path / FILES["train"]).rename(path)
    source = open_course_file(path)
    with h5py.File(path, "w") as f:  # replaced, after the check, by a file with a virtual dataset
        layout = h5py.VirtualLayout(shape=(4, 64, 64, 3), dtype="u1")
        layout[:] = h5py.VirtualSource("/etc/passwd", "x", shape=(4, 64, 64, 3))
        f.create_virtual_dataset("train_set_x", layout)
        f["train_set_y"] = np.zeros(4, np.int64)
    with pytest.raises(DataError, match="keeps its data in other files"):
        RowReader(source, max_batch=4)


def test_read_range_gives_a_shard_as_in_memory_loading(folder: Path):
    path = folder / FILES["train"]
    rows, labels = read_range(open_course_file(path), 1, 3)
    split = read_split(path, "train")
    np.testing.assert_array_equal(rows.T / 255.0, split.images[1:3].reshape(2, -1).T / 255.0)
    np.testing.assert_array_equal(labels, split.labels[1:3])
    with pytest.raises(InputError, match="not within 0..4"):
        read_range(open_course_file(path), 2, 5)


def test_a_name_that_is_not_text_is_listed_not_crashed_on(tmp_path: Path):
    """A damaged name comes back from h5py as bytes (found by the randomized fuzzer)."""

    def odd_name(f: h5py.File) -> None:
        f.create_dataset(b"\xff_cl", data=CLASSES)

    path = write_split(tmp_path, "train", classes=MISSING, edit=odd_name)
    write_split(tmp_path, "test", m=3)
    with pytest.raises(DataError, match=r"missing dataset 'list_classes' \(found: b'\\xff_cl'"):
        load_dataset(tmp_path)
    assert open_course_file(path).classes == ("non-cat", "cat")  # streaming: default names
