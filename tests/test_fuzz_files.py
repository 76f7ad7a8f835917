"""Fuzzing the file loaders: whatever the bytes, a clear deepnet error or a sane result.

:func:`deepnet.data.load_dataset` (HDF5), the streaming reader
(:func:`deepnet.hdf5_rows.open_course_file` + :class:`~deepnet.hdf5_rows.RowReader`, what
``deepnet train --stream`` reads with) and :func:`deepnet.model_io.load_model` (ZIP/npz)
are fed mutated, truncated, forged and foreign files. Every HDF5 file goes to both HDF5
readers, and the streaming reader must refuse what deepnet.data refuses, with the same
message (:func:`check_stream_agrees`). Every file is opened in a child
process (``tests/fuzz_worker.py``) with a capped address space, so a segfault in a C library
shows up as a failed test instead of killing pytest, a hang as a timeout, and an allocation
driven by a forged size as a MemoryError. The only acceptable outcomes are a loaded file
that makes sense, or deepnet's own DataError / ModelFileError with a short message naming
the file. Hypothesis runs derandomized with fixed example counts and no example database,
so CI sees the same inputs every time.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import select
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepnet.data import FILES, N_FEATURES
from deepnet.initialization import draw_parameters
from deepnet.model_io import META_NAME, Model, save_model

WORKER = Path(__file__).with_name("fuzz_worker.py")
TIMEOUT_S = 20.0  # a good load takes milliseconds; this much means a hang
MAX_MESSAGE = 600  # characters: a clear error is a line or two, never a dump of the file

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="the loader child is driven through select() on pipes"
)


# DEEPNET_FUZZ_SCALE=20 runs twenty times the examples, drawn at random: a longer local
# session that looks further than CI (which always sees the same, derandomized inputs).
SCALE = float(os.environ.get("DEEPNET_FUZZ_SCALE", "1"))


def fuzz_settings(examples: int):
    """Deterministic hypothesis settings: same inputs on every run, no database."""
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        derandomize=SCALE == 1,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class Worker:
    """The child process that loads files; restarted after a crash or a hang."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        with self.log.open("ab") as log:  # HDF5 may print; a full pipe must not block the child
            self.proc = subprocess.Popen(
                [sys.executable, str(WORKER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
            )
        ready = self._answer(TIMEOUT_S * 3)
        assert ready == {"ready": True}, ready

    def _answer(self, timeout: float) -> dict:
        line = b""
        while not line.endswith(b"\n"):
            readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
            if not readable:
                return {"outcome": "hung", "timeout_s": timeout}
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:  # the child closed its end: it died
                return {"outcome": "crashed"}
            line += chunk
        return json.loads(line)

    def load(self, kind: str, path: Path, timeout: float = TIMEOUT_S) -> dict:
        """Ask the child to load ``path``; the answer, or what went wrong with the child."""
        if self.proc is None:
            self._start()
        self.proc.stdin.write(json.dumps({"kind": kind, "path": str(path)}).encode() + b"\n")
        self.proc.stdin.flush()
        answer = self._answer(timeout)
        if answer.get("outcome") in ("hung", "crashed"):
            self.proc.kill()  # a no-op for a dead child
            self.close()
            answer["returncode"] = self.proc.returncode
            answer["log"] = self.log.read_text(errors="replace")[-2000:]
            self.proc = None
        return answer

    def close(self) -> None:
        """End the child."""
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One loader child for the whole module (started on first use)."""
    child = Worker(tmp_path_factory.mktemp("worker") / "stderr.log")
    yield child
    child.close()


def test_the_harness_sees_crashes_hangs_and_runaway_allocations(worker, tmp_path: Path):
    crashed = worker.load("segfault", tmp_path)
    assert crashed["outcome"] == "crashed" and crashed["returncode"] < 0, crashed
    assert worker.load("allocate", tmp_path)["type"] == "MemoryError"
    assert worker.load("hang", tmp_path, timeout=1.0)["outcome"] == "hung"
    with pytest.raises(AssertionError):
        check_answer(crashed, "DataError", tmp_path)


def check_answer(answer: dict, error: str, path: Path) -> None:
    """Loaded and sane, or deepnet's own ``error`` with a short message naming ``path``
    (or its folder, for a problem between the two data files)."""
    assert answer["outcome"] in ("loaded", "raised"), answer
    if answer["outcome"] == "raised":
        assert answer["deepnet"] and answer["type"] == error, answer
        assert answer["message_length"] <= MAX_MESSAGE, answer["message"]
        assert answer["message"].startswith((str(path), str(path.parent))), answer
        assert "\n" not in answer["message"].strip(), answer["message"]
    elif error == "DataError":
        m = answer["train_x"][1]
        assert answer["train_x"] == [N_FEATURES, m] and answer["train_y"] == [1, m] and m >= 1
        assert 0.0 <= answer["x_range"][0] <= answer["x_range"][1] <= 1.0, answer
        assert set(answer["labels"]) <= {0.0, 1.0}, answer
        assert len(set(answer["classes"])) == 2, answer
    else:
        dims = answer["layer_dims"]
        assert answer["finite"], answer
        for layer in range(1, len(dims)):
            assert answer["shapes"][f"W{layer}"] == [dims[layer], dims[layer - 1]]
            assert answer["shapes"][f"b{layer}"] == [dims[layer], 1]


# What deepnet.data refuses and the streaming reader may accept: limits of reading a whole
# folder into memory, and the two files of a folder disagreeing (streaming reads one file).
DATA_ONLY = ("more than deepnet loads into memory", "missing dataset 'list_classes'")
# What the streaming reader refuses and deepnet.data may accept (or refuse later, from the
# values): its stricter rules on the layout, checked from declarations.
STREAM_ONLY = ("must be uint8 images", "streaming reads one label per row", "streaming takes")


def check_stream_agrees(worker: Worker, path: Path, data: dict) -> dict:
    """The streaming reader on the train file ``path``, given deepnet.data's answer ``data``
    for its folder: it refuses every file deepnet.data refuses, with the same message (bar
    its own stricter rules), and reads what both accept as deepnet.data does."""
    stream = worker.load("stream", path)
    assert stream["outcome"] in ("loaded", "raised"), stream
    if stream["outcome"] == "raised":
        assert stream["deepnet"] and stream["type"] == "DataError", stream
        assert stream["message_length"] <= MAX_MESSAGE, stream["message"]
        assert stream["message"].startswith(str(path)), stream
        assert "\n" not in stream["message"].strip(), stream["message"]
    stricter = stream["outcome"] == "raised" and any(s in stream["message"] for s in STREAM_ONLY)
    if data["outcome"] == "raised":
        folder_level = not data["message"].startswith(str(path))
        if folder_level or any(s in data["message"] for s in DATA_ONLY):
            return stream
        assert stream["outcome"] == "raised", (data, stream)
        assert stricter or stream["message"] == data["message"], (data, stream)
    elif stream["outcome"] == "loaded":
        m = data["train_x"][1]
        assert (stream["m"], stream["n_x"]) == (m, N_FEATURES), (data, stream)
        assert stream["labels"] == data["labels"] and stream["classes"] == data["classes"]
        assert stream["x_range"] == data["x_range"], (data, stream)
    else:
        assert stricter, (data, stream)
    return stream


# ---------------------------------------------------------------------------------------------
# Byte-level mutations

# Values that break parsers: all ones (huge lengths, undefined addresses), zero, sign bits.
NASTY = [b"\xff" * 8, b"\x00" * 8, b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\x01", b"\x80"]


class Base:
    """A valid file to mutate, and the byte positions worth hitting (its structure)."""

    def __init__(self, name: str, content: bytes, hot: list[int]) -> None:
        self.name, self.content, self.hot = name, content, hot

    def __repr__(self) -> str:  # hypothesis prints it with every failing example
        return f"<{self.name}: {len(self.content)} bytes>"


def mutated(base: Base) -> st.SearchStrategy[bytes]:
    """``base`` with a few bytes overwritten (mostly where its structure is), maybe cut short."""
    size = len(base.content)
    position = st.one_of(st.sampled_from(base.hot), st.integers(0, size - 1))
    value = st.one_of(st.sampled_from(NASTY), st.binary(min_size=1, max_size=4))
    edits = st.lists(st.tuples(position, value), min_size=1, max_size=6)
    cut = st.one_of(st.none(), st.integers(0, size))

    def apply(args: tuple[list[tuple[int, bytes]], int | None]) -> bytes:
        out = bytearray(base.content)
        for at, patch in args[0]:
            out[at : at + len(patch)] = patch[: len(out) - at]
        return bytes(out[: args[1]]) if args[1] is not None else bytes(out)

    return st.tuples(edits, cut).map(apply)


CLASSES = np.array([b"non-cat", b"cat"], dtype="S7")


def write_split(
    path: Path, split: str, m: int, *, compress: bool = False, libver: str = "earliest"
) -> None:
    """A valid file in the course layout (m pictures), optionally chunked and compressed."""
    rng = np.random.RandomState(m)
    x = rng.randint(0, 256, size=(m, 64, 64, 3)).astype(np.uint8)
    options = {"compression": "gzip", "shuffle": True, "chunks": (1, 64, 64, 3)} if compress else {}
    if compress:
        x[:] = x[:, :1, :1]  # smooth pictures: a small compressed file, mostly metadata
    with h5py.File(path, "w", libver=libver) as f:
        f.create_dataset(f"{split}_set_x", data=x, **options)
        f.create_dataset(f"{split}_set_y", data=(np.arange(m) % 2).astype(np.int64))
        f.create_dataset("list_classes", data=CLASSES)
        f.attrs["note"] = "fuzz base"


def h5_hot_positions(path: Path) -> list[int]:
    """Every byte of the file except the pixels of a contiguous X: where the metadata lives."""
    size = path.stat().st_size
    with h5py.File(path, "r") as f:
        x = next(d for k, d in f.items() if k.endswith("_set_x"))
        offset = x.id.get_offset()
        raw = range(offset, offset + x.id.get_storage_size()) if offset is not None else range(0)
    return [i for i in range(size) if i not in raw]


@pytest.fixture(scope="module")
def h5_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder whose test file is valid; each example writes its own train file."""
    folder = tmp_path_factory.mktemp("h5")
    write_split(folder / FILES["test"], "test", 1)
    return folder


def h5_base(tmp_path_factory: pytest.TempPathFactory, name: str, **options) -> Base:
    path = tmp_path_factory.mktemp("base") / "train.h5"
    write_split(path, "train", 2, **options)
    return Base(name, path.read_bytes(), h5_hot_positions(path))


@pytest.fixture(scope="module")
def h5_plain(tmp_path_factory) -> Base:
    """The course's own layout: HDF5 superblock 0, contiguous datasets, no checksums."""
    return h5_base(tmp_path_factory, "course layout")


@pytest.fixture(scope="module")
def h5_chunked(tmp_path_factory) -> Base:
    """Chunked, shuffled and gzip-compressed X in the newest file format (B-trees, filters)."""
    return h5_base(tmp_path_factory, "chunked gzip", compress=True, libver="latest")


def load_h5_bytes(worker: Worker, folder: Path, content: bytes) -> None:
    path = folder / FILES["train"]
    path.write_bytes(content)
    answer = worker.load("data", folder)
    check_answer(answer, "DataError", path)
    check_stream_agrees(worker, path, answer)


@fuzz_settings(400)
@given(data=st.data())
def test_mutated_course_layout_hdf5(worker, h5_folder, h5_plain, data):
    load_h5_bytes(worker, h5_folder, data.draw(mutated(h5_plain)))


@fuzz_settings(300)
@given(data=st.data())
def test_mutated_chunked_compressed_hdf5(worker, h5_folder, h5_chunked, data):
    load_h5_bytes(worker, h5_folder, data.draw(mutated(h5_chunked)))


def zip_hot_positions(content: bytes) -> list[int]:
    """ZIP headers, the JSON, the .npy headers and the central directory: not the floats."""
    hot = set(range(len(content)))
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        for info in archive.infolist():
            if info.filename.endswith(".npy"):
                data_start = info.header_offset + 30 + len(info.filename) + len(info.extra)
                hot -= set(range(data_start + 128, data_start + info.compress_size))
    return sorted(hot)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the model files the examples write."""
    return tmp_path_factory.mktemp("models")


def load_model_bytes(worker: Worker, folder: Path, content: bytes) -> None:
    path = folder / "model.npz"
    path.write_bytes(content)
    check_answer(worker.load("model", path), "ModelFileError", path)


@pytest.fixture(scope="module")
def model_base(tmp_path_factory) -> Base:
    """A valid float32 12288-2-1 model file and its structural byte positions."""
    model = Model(
        parameters=draw_parameters([N_FEATURES, 2, 1], "lecun", 1),
        layer_dims=[N_FEATURES, 2, 1],
        dtype="float32",
        training={"learning_rate": 0.01, "num_iterations": 3},
        costs=[0.69, 0.5],
    )
    path = save_model(model, tmp_path_factory.mktemp("model") / "m.npz")
    content = path.read_bytes()
    return Base("model file", content, zip_hot_positions(content))


@fuzz_settings(400)
@given(data=st.data())
def test_mutated_model_file(worker, scratch, model_base, data):
    load_model_bytes(worker, scratch, data.draw(mutated(model_base)))


# ---------------------------------------------------------------------------------------------
# Structure: HDF5 files built with h5py from the wrong keys, dtypes, shapes and storage


def _dtype(name: str) -> np.dtype:
    special = {
        "vlen str": h5py.string_dtype("utf-8"),
        "vlen bytes": h5py.string_dtype("ascii"),
        "compound": np.dtype([("a", "u1"), ("b", "f8")]),
        "enum": h5py.enum_dtype({"no": 0, "yes": 1}, basetype="u1"),
        "subarray": np.dtype(("u1", (3,))),
        "reference": h5py.ref_dtype,
    }
    return special.get(name) or np.dtype(name)


DTYPE_NAMES = ["u1", "i1", "u2", "i4", "i8", "u8", "f2", "f4", "f8", "c8", "?", "S7", "S1",
               "V4", "S100000000", "vlen str", "vlen bytes", "compound", "enum", "subarray",
               "reference"]  # fmt: skip
SIZES = [0, 1, 2, 3, 64, 20_000, 20_001, 10**7, 2**40]


def SHAPES(m: int) -> list:  # (upper case: a table, like the others)
    """Wrong shapes for a dataset meant to hold m of something."""
    return [(), None, (2, 2), (m, 12288), (m, 64, 64, 3, 1)]


STORAGE = ["full", "full", "sparse", "gzip", "big chunks", "compact", "external file"]


FILLS = ["pixels", "labels", 0, 1, 255, 256, -1, "nan", "inf"]
NAMES = [(b"non-cat", b"cat"), (b"cat", b"cat"), (b"", b"cat"), (b"\xff\xfe", b"cat"),
         (b"x" * 500, b"cat")]  # fmt: skip


def _values(shape: tuple[int, ...], dtype: np.dtype, fill) -> np.ndarray:
    """Contents for a dataset small enough to write: sensible, edge or random values."""
    size = math.prod(shape)
    if dtype.kind in "biuf":
        rng = np.random.RandomState(size)
        if fill == "pixels":
            raw = rng.randint(0, 256, size)
        elif fill == "labels" or isinstance(fill, tuple):
            raw = rng.randint(0, 2, size)
        else:
            raw = np.full(size, float(fill))
        with np.errstate(invalid="ignore", over="ignore"):
            return raw.astype(dtype).reshape(shape)
    if dtype.kind == "S" or h5py.check_string_dtype(dtype) is not None:
        names = list(fill) if isinstance(fill, tuple) else [b"cat"]
        names = (names * size)[:size]
        return np.array(names, dtype=object if dtype.kind == "O" else dtype).reshape(shape)
    return np.zeros(shape, dtype=dtype)


@st.composite
def h5_layout(draw) -> dict:
    """A recipe for a train file: the course layout with up to three things changed."""
    m = draw(st.sampled_from([1, 2, 2, 2, 0, 20_000, 10**7]))
    x_storage = draw(st.sampled_from(["full"] * 4 + STORAGE))
    recipe = {
        "train_set_x": dict(kind="dataset", shape=(m, 64, 64, 3), dtype="u1", storage=x_storage,
                            fill="pixels"),
        "train_set_y": dict(kind="dataset", shape=(m,), dtype="i8", storage="full", fill="labels"),
        "list_classes": dict(kind="dataset", shape=(2,), dtype="S7", storage="full",
                             fill=NAMES[0]),
    }  # fmt: skip
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(list(recipe)))
        entry = recipe[key]
        aspect = draw(st.sampled_from(["kind", "shape", "dim", "dtype", "storage", "fill"]))
        if aspect == "kind":
            entry["kind"] = draw(st.sampled_from(["missing", "group", "soft", "external"]))
            if entry["kind"] == "soft":
                entry["target"] = draw(st.sampled_from(["/nowhere", "/list_classes"]))
            if entry["kind"] == "external":
                entry["target"] = draw(st.sampled_from([FILES["test"], "/dev/zero", "none.h5"]))
        elif aspect == "shape":
            entry["shape"] = draw(st.sampled_from(SHAPES(m)))
        elif aspect == "dim" and entry["shape"]:
            shape = list(entry["shape"])
            shape[draw(st.integers(0, len(shape) - 1))] = draw(st.sampled_from(SIZES))
            entry["shape"] = tuple(shape)
        elif aspect == "dtype":
            entry["dtype"] = draw(st.sampled_from(DTYPE_NAMES))
        elif aspect == "storage":
            entry["storage"] = draw(st.sampled_from(STORAGE))
        elif aspect == "fill":
            entry["fill"] = draw(st.sampled_from(FILLS + NAMES[1:]))
    attribute = draw(st.sampled_from(
        [None, None, True, 1, "yes", np.ones(1000, bool), np.zeros(0), np.array([[True]])]
    ))  # fmt: skip
    return {"recipe": recipe, "attribute": attribute}


def write_layout(path: Path, layout: dict) -> bool:
    """Build the file; False when h5py itself refuses the recipe (nothing to test then)."""
    try:
        with h5py.File(path, "w") as f:
            for key, entry in layout["recipe"].items():
                if entry["kind"] == "group":
                    f.create_group(key)
                elif entry["kind"] == "soft":
                    f[key] = h5py.SoftLink(entry["target"])
                elif entry["kind"] == "external":
                    f[key] = h5py.ExternalLink(entry["target"], key.replace("train", "test"))
                elif entry["kind"] == "dataset":
                    _write_dataset(f, key, entry)
            if layout["attribute"] is not None:
                f.attrs["deepnet_synthetic"] = layout["attribute"]
    except (ValueError, TypeError, OSError, OverflowError):
        return False
    return True


def _write_dataset(f: h5py.File, key: str, entry: dict) -> None:
    dtype, shape, storage = _dtype(entry["dtype"]), entry["shape"], entry["storage"]
    if shape is None:
        f.create_dataset(key, data=h5py.Empty(dtype))
        return
    nbytes = math.prod(shape) * dtype.itemsize
    small = nbytes <= 1 << 20
    if storage == "compact" and nbytes < 60_000:  # inside the object header (64 KiB at most)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        space = h5py.h5s.create_simple(shape) if shape else h5py.h5s.create(h5py.h5s.SCALAR)
        h5py.h5d.create(f.id, key.encode(), h5py.h5t.py_create(dtype, logical=True), space, dcpl)
        f[key][()] = _values(shape, dtype, entry["fill"])
    elif storage == "external file":  # raw data read from another file, e.g. a device
        target = "/dev/zero" if key.endswith("x") else "raw.bin"
        f.create_dataset(key, shape=shape, dtype=dtype, external=[(target, 0, h5py.h5f.UNLIMITED)])
    elif storage == "big chunks" and shape and all(shape[1:]) and small:
        # Chunks of 64 rows, more than the dataset has: HDF5 reads (inflates) whole chunks.
        f.create_dataset(key, shape=shape, dtype=dtype, chunks=(64, *shape[1:]),
                         compression="gzip", maxshape=(None, *shape[1:]))  # fmt: skip
        f[key][()] = _values(shape, dtype, entry["fill"])
    elif storage == "gzip" and small:
        f.create_dataset(key, data=_values(shape, dtype, entry["fill"]), compression="gzip")
    elif storage == "sparse" or not small:  # declared, never written: the file stores nothing
        f.create_dataset(key, shape=shape, dtype=dtype, chunks=True if shape else None)
    else:
        f.create_dataset(key, data=_values(shape, dtype, entry["fill"]), dtype=dtype)


@fuzz_settings(500)
@given(layout=h5_layout())
def test_forged_hdf5_layouts(worker, h5_folder, layout):
    path = h5_folder / FILES["train"]
    if write_layout(path, layout):
        answer = worker.load("data", h5_folder)
        check_answer(answer, "DataError", path)
        check_stream_agrees(worker, path, answer)


# ---------------------------------------------------------------------------------------------
# Structure: model files with forged metadata, members and .npy headers


def model_members(base: Base) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(base.content)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from([10**400, -1, 0, 2**63])
    | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
META_KEYS = ["format", "format_version", "model", "layer_dims", "activations", "dtype",
             "preprocessing", "classes", "costs", "training", "threshold"]  # fmt: skip


@st.composite
def forged_meta(draw, meta: dict) -> bytes:
    """The metadata with fields replaced, removed or nested; or not JSON at all."""
    choice = draw(st.sampled_from(["fields", "fields", "fields", "deep", "raw", "image_shape"]))
    if choice == "deep":
        return ("[" * draw(st.sampled_from([100, 10_000, 200_000]))).encode()
    if choice == "raw":
        return draw(st.binary(max_size=64))
    meta = json.loads(json.dumps(meta))
    if choice == "image_shape":  # the product that turned a string into gigabytes
        meta["preprocessing"]["image_shape"] = draw(st.lists(json_values, max_size=4))
        return json.dumps(meta).encode()
    for key in draw(st.lists(st.sampled_from(META_KEYS), min_size=1, max_size=3)):
        if draw(st.booleans()):
            meta[key] = draw(json_values)
        else:
            meta.pop(key, None)
    return json.dumps(meta).encode()


def npy_bytes(header: str, data: bytes, version: tuple[int, int] = (1, 0)) -> bytes:
    """A .npy file with a header written by hand (what a forger would write)."""
    text = header.encode("latin1")
    width = 2 if version == (1, 0) else 4
    pad = -(6 + 2 + width + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    return b"\x93NUMPY" + bytes(version) + len(text).to_bytes(width, "little") + text + data


@st.composite
def forged_npy(draw) -> bytes:
    """A parameter member with a forged header: any dtype, shape, order, amount of data."""
    descr = draw(st.sampled_from(["<f4", "<f8", ">f4", "|O", "<U3", "|V4", "<c8", "<i4", "|b1"]))
    shape = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 12288, 2**31, 10**12]), max_size=3)))
    fortran = draw(st.booleans())
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape})
    if draw(st.integers(0, 5)) == 0:
        header = draw(
            st.sampled_from(
                [
                    "{",
                    "{'descr': '<f4'}",
                    "(" * 300,
                    "__import__('os')",
                    "{'descr': '<f4', 'fortran_order': 0, 'shape': (2, -1)}",
                ]
            )
        )
    data = draw(st.sampled_from([b"", b"\x00" * 8, b"\x00" * (2 * 12288 * 4), b"\x80" * 100]))
    if descr == "|O":
        data = pickle.dumps(np.array([1.0, None], dtype=object))
    return npy_bytes(header, data, draw(st.sampled_from([(1, 0), (2, 0), (3, 0), (9, 9)])))


COMPRESSION = [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]


@st.composite
def forged_model(draw, base: Base) -> bytes:
    """The model file rebuilt with forged metadata, members, compression or comment."""
    members = model_members(base)
    meta = json.loads(members[META_NAME])
    for _ in range(draw(st.integers(1, 3))):
        change = draw(st.sampled_from(["meta", "npy", "drop", "extra", "rename"]))
        if change == "meta":
            members[META_NAME] = draw(forged_meta(meta))
        elif change == "npy":
            members[draw(st.sampled_from(["W1.npy", "b1.npy", "W2.npy", "b2.npy"]))] = draw(
                forged_npy()
            )
        elif change == "drop":
            members.pop(draw(st.sampled_from(sorted(members))), None)
        elif change == "extra":
            members[draw(st.sampled_from(["W3.npy", "evil.py", "../up.npy", "W1.npy/x"]))] = b"x"
        elif change == "rename" and members:
            name = draw(st.sampled_from(sorted(members)))
            members[draw(st.sampled_from(["W1.npy", "DEEPNET.JSON", "b1"]))] = members.pop(name)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content, compress_type=draw(st.sampled_from(COMPRESSION)))
        archive.comment = draw(st.sampled_from([b"", b"PK\x05\x06" + b"\x00" * 18]))
    return buffer.getvalue()


@fuzz_settings(200)
@given(data=st.data())
def test_forged_model_files(worker, scratch, model_base, data):
    load_model_bytes(worker, scratch, data.draw(forged_model(model_base)))


@fuzz_settings(200)
@given(content=st.one_of(
    st.binary(max_size=2048),
    st.binary(max_size=512).map(lambda b: b"\x89HDF\r\n\x1a\n" + b),  # HDF5 signature, then junk
    st.binary(max_size=512).map(lambda b: b"PK\x03\x04" + b),  # a ZIP local header, then junk
    st.binary(max_size=512).map(lambda b: b"PK\x05\x06" + b),  # an end-of-archive record
))  # fmt: skip
def test_random_bytes(worker, h5_folder, scratch, content):
    load_h5_bytes(worker, h5_folder, content)
    load_model_bytes(worker, scratch, content)


# ---------------------------------------------------------------------------------------------
# What the fuzzers found (and a few things they cannot reach quickly), kept as fixed cases


def _sparse_pictures(f: h5py.File) -> None:
    """20 000 pictures declared, none written: a 160 kB file that read as 2.3 GB."""
    f.create_dataset("train_set_x", shape=(20_000, 64, 64, 3), dtype="u1", chunks=(1, 64, 64, 3))
    f.create_dataset("train_set_y", data=np.zeros(20_000, np.int64))


def _gzip_bomb(f: h5py.File) -> None:
    """5 000 black pictures, gzipped: 61 MB of pixels from about 100 kB."""
    x = np.zeros((5_000, 64, 64, 3), np.uint8)
    f.create_dataset("train_set_x", data=x, chunks=(500, 64, 64, 3), compression="gzip")
    f.create_dataset("train_set_y", data=np.zeros(5_000, np.int64))


def _big_chunk(f: h5py.File) -> None:
    """One picture in a chunk made for 200: HDF5 inflates the whole 2.4 MB chunk to read it."""
    f.create_dataset("train_set_x", shape=(1, 64, 64, 3), maxshape=(None, 64, 64, 3),
                     chunks=(200, 64, 64, 3), dtype="u1", compression="gzip")  # fmt: skip
    f["train_set_x"][0] = 7
    f.create_dataset("train_set_y", data=np.zeros(1, np.int64))


def _course_like(f: h5py.File, skip: str = "") -> None:
    if skip != "x":
        f.create_dataset("train_set_x", data=np.full((1, 64, 64, 3), 9, np.uint8))
    if skip != "y":
        f.create_dataset("train_set_y", data=np.zeros(1, np.int64))


def _external_link(f: h5py.File) -> None:
    _course_like(f, skip="x")
    f["train_set_x"] = h5py.ExternalLink(FILES["test"], "test_set_x")


def _external_storage(f: h5py.File) -> None:
    """Raw data 'stored' in /dev/zero: reading would read whatever that file is (a FIFO hangs)."""
    _course_like(f, skip="x")
    f.create_dataset("train_set_x", shape=(1, 64, 64, 3), dtype="u1",
                     external=[("/dev/zero", 0, h5py.h5f.UNLIMITED)])  # fmt: skip


def _virtual(f: h5py.File) -> None:
    _course_like(f, skip="x")
    layout = h5py.VirtualLayout(shape=(1, 64, 64, 3), dtype="u1")
    layout[:] = h5py.VirtualSource(FILES["test"], "test_set_x", shape=(1, 64, 64, 3))
    f.create_virtual_dataset("train_set_x", layout)


def _huge_attribute(f: h5py.File) -> None:
    _course_like(f)
    f.attrs["deepnet_synthetic"] = np.ones(5_000, bool)


def _empty_dataspace(f: h5py.File) -> None:
    _course_like(f, skip="x")
    f.create_dataset("train_set_x", data=h5py.Empty("u1"))


def _huge_names(f: h5py.File) -> None:
    """Two class names of a 100 MB fixed-size string type, never written."""
    _course_like(f)
    f.create_dataset("list_classes", shape=(2,), dtype="S100000000", chunks=(1,))


def _pickle_in_hdf5(f: h5py.File, marker: Path) -> None:
    _course_like(f)
    f.create_dataset("list_classes", data=np.void(pickle.dumps(Plant(marker))))


class Plant:
    """Unpickling this creates ``marker``: how a loader that executes code gives itself away."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _sparse(n: int, *, chunked: bool = True, written: int = 0, fill: int = 0):
    """``n`` pictures declared in a file of a few kB, ``written`` of them stored: the rest
    would stream fill values for ever (10**7 pictures: 123 GB declared)."""

    def build(f: h5py.File) -> None:
        chunks = {"chunks": (1, 64, 64, 3)} if chunked else {}
        x = f.create_dataset("train_set_x", shape=(n, 64, 64, 3), dtype="u1", fillvalue=fill,
                             **chunks)  # fmt: skip
        if written:
            x[:written] = 7
        y = f.create_dataset("train_set_y", shape=(n,), dtype="u1", chunks=True)
        y[:written] = 1

    return build


_BOMB_ROWS = 100_000  # 1.2 GB of pixels


def _gzip_chunk_bomb(f: h5py.File) -> None:
    """One chunk of 1.2 GB of black pictures, deflated to about 1.2 MB: a 2 MB file."""
    x = f.create_dataset("train_set_x", shape=(_BOMB_ROWS, 64, 64, 3), dtype="u1",
                         chunks=(_BOMB_ROWS, 64, 64, 3), compression="gzip")  # fmt: skip
    x.id.write_direct_chunk((0, 0, 0, 0), _deflated_zeros(_BOMB_ROWS * 64 * 64 * 3))
    f.create_dataset("train_set_y", data=np.zeros(_BOMB_ROWS, np.uint8))


def _deflated_zeros(size: int) -> bytes:
    """``size`` zero bytes in zlib's format (HDF5's gzip filter), made a mebibyte at a time."""
    packer, block, parts = zlib.compressobj(9), bytes(1 << 20), []
    for start in range(0, size, len(block)):
        parts.append(packer.compress(block[: min(len(block), size - start)]))
    return b"".join(parts) + packer.flush()


def _fifo_storage(f: h5py.File) -> None:
    """Raw data 'stored' in a named pipe with no writer: reading it would block for ever."""
    pipe = Path(f.filename).with_name("pipe")
    if not pipe.exists():
        os.mkfifo(pipe)
    _course_like(f, skip="x")
    f.create_dataset("train_set_x", shape=(1, 64, 64, 3), dtype="u1",
                     external=[(str(pipe), 0, h5py.h5f.UNLIMITED)])  # fmt: skip


H5_CASES = {
    "sparse 10**6 pictures": (_sparse(10**6), "holds only 0 bytes"),
    "sparse 10**7 pictures, contiguous, fill 255": (
        _sparse(10**7, chunked=False, fill=255),
        "holds only 0 bytes",
    ),
    "10**6 pictures, 100 written": (_sparse(10**6, written=100), "holds only 1228800 bytes"),
    "one 1.2 GB gzip chunk in a 2 MB file": (_gzip_chunk_bomb, "decompression bomb"),
    "a FIFO as external storage": (_fifo_storage, "keeps its data in other files"),
    "sparse 20 000 pictures": (_sparse_pictures, "holds only 0 bytes"),
    "gzip bomb": (_gzip_bomb, "decompression bomb"),
    "chunk larger than the data": (_big_chunk, "larger than its"),
    "external link": (_external_link, "another file, which deepnet does not follow"),
    "external raw storage (/dev/zero)": (_external_storage, "keeps its data in other files"),
    "virtual dataset": (_virtual, "keeps its data in other files"),
    "attribute of 5 000 values": (_huge_attribute, "single true/false value"),
    "empty dataspace": (_empty_dataspace, "empty dataset"),
    "100 MB class-name type": (_huge_names, "class names are words"),
}


@pytest.mark.parametrize("case", list(H5_CASES))
def test_found_hdf5_cases(worker, h5_folder, case):
    build, expected = H5_CASES[case]
    path = h5_folder / FILES["train"]
    with h5py.File(path, "w") as f:
        build(f)
        if "list_classes" not in f:
            f.create_dataset("list_classes", data=CLASSES)
    answer = worker.load("data", h5_folder)
    check_answer(answer, "DataError", path)
    assert answer["outcome"] == "raised" and expected in answer["message"], answer
    assert check_stream_agrees(worker, path, answer)["message"] == answer["message"]


def _special_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """A train 'file' that is not a regular file, and the cause each must be refused for."""
    pipe, sub = folder / "a-fifo", folder / "a-folder"
    if not pipe.exists():
        os.mkfifo(pipe)
    sub.mkdir(exist_ok=True)
    return {
        "fifo": (pipe, "is a named pipe (FIFO), not a regular file"),
        "folder": (sub, "is a folder, not a regular file"),
        "device": (Path("/dev/zero"), "is a character device, not a regular file"),
    }


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_special_files_are_refused_by_name_without_blocking(worker, tmp_path, kind):
    """A FIFO read would block for ever: both readers refuse it (and folders, devices) by
    what it is, never "not found". The worker's timeout turns a hang into a failure."""
    target, cause = _special_files(tmp_path)[kind]
    folder = tmp_path / "data"
    folder.mkdir()
    write_split(folder / FILES["test"], "test", 1)
    path = folder / FILES["train"]
    path.symlink_to(target)  # the data folder's train file is the special file
    data = worker.load("data", folder)
    check_answer(data, "DataError", path)
    assert data["outcome"] == "raised" and cause in data["message"], data
    assert check_stream_agrees(worker, path, data)["message"] == data["message"]
    stream = worker.load("stream", target, timeout=10.0)
    assert stream["outcome"] == "raised" and stream["message"].startswith(f"{target}: {cause}")


def test_pickle_in_hdf5_is_never_unpickled(worker, h5_folder, tmp_path):
    marker = tmp_path / "executed"
    path = h5_folder / FILES["train"]
    with h5py.File(path, "w") as f:
        _pickle_in_hdf5(f, marker)
    answer = worker.load("data", h5_folder)
    check_answer(answer, "DataError", path)
    check_stream_agrees(worker, path, answer)
    assert not marker.exists()


def _central_entry(content: bytes, name: str) -> int:
    """Offset of ``name``'s record in the ZIP central directory (what zipfile trusts)."""
    start = 0
    while True:
        start = content.index(b"PK\x01\x02", start)
        size = int.from_bytes(content[start + 28 : start + 30], "little")
        if content[start + 46 : start + 46 + size] == name.encode():
            return start
        start += 4


def patched(content: bytes, name: str, field: int, value: int, width: int) -> bytes:
    """``content`` with one field of ``name``'s central-directory record overwritten."""
    at = _central_entry(content, name) + field
    return content[:at] + value.to_bytes(width, "little") + content[at + width :]


def _rezip(members: dict[str, bytes], compress=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compress) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _with_meta(base: Base, change) -> bytes:
    members = model_members(base)
    meta = json.loads(members[META_NAME])
    change(meta)
    members[META_NAME] = json.dumps(meta).encode()
    return _rezip(members)


def _deflate_bomb(base: Base) -> bytes:
    """deepnet.json then 600 MB of spaces, deflated to 600 kB, declaring its real 700 bytes."""
    members = model_members(base)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        with out.open(META_NAME, "w") as member:  # streamed: little memory here
            member.write(members[META_NAME])
            for _ in range(600):
                member.write(b" " * (1 << 20))
        for name, content in members.items():
            if name != META_NAME:
                out.writestr(name, content)
    return patched(buffer.getvalue(), META_NAME, 24, len(members[META_NAME]), 4)


def _pickled_parameter(base: Base, marker: Path) -> bytes:
    members = model_members(base)
    buffer = io.BytesIO()
    np.save(buffer, np.array([Plant(marker)] * 2, dtype=object).reshape(2, 1), allow_pickle=True)
    members["b1.npy"] = buffer.getvalue()
    return _rezip(members)


def _plain_npz_with_pickle(base: Base, marker: Path) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, W1=np.array([Plant(marker)], dtype=object))
    return buffer.getvalue()


def _pickled_meta(base: Base, marker: Path) -> bytes:
    members = model_members(base)
    members[META_NAME] = pickle.dumps(Plant(marker))
    return _rezip(members)


MODEL_CASES = {
    "unsupported compression method": (
        lambda b: patched(b.content, "W1.npy", 10, 99, 2), "compression method"),
    "ZIP version 25.5 needed": (lambda b: patched(b.content, "b1.npy", 6, 0xFF, 1), "version"),
    "encrypted member": (lambda b: patched(b.content, "W2.npy", 8, 1, 2), "encrypted"),
    "compressed size of 4 GB": (
        lambda b: patched(b.content, META_NAME, 20, 2**32 - 1, 4), "more than the whole file"),
    "deflate bomb with a forged size": (_deflate_bomb, "CRC"),
    "JSON nested 200 000 deep": (
        lambda b: _rezip({**model_members(b), META_NAME: b"[" * 200_000}), "nested too deeply"),
    "image_shape that multiplies a string": (
        lambda b: _with_meta(b, lambda m: m["preprocessing"].update(image_shape=["a", 10**12])),
        "image_shape"),
    "cost of 10**400": (lambda b: _with_meta(b, lambda m: m.update(costs=[10**400])), "costs"),
    "npy header '{'": (
        lambda b: _rezip({**model_members(b), "b1.npy": npy_bytes("{", b"")}), "damaged .npy"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_found_model_file_cases(worker, scratch, model_base, case):
    build, expected = MODEL_CASES[case]
    path = scratch / "model.npz"
    path.write_bytes(build(model_base))
    answer = worker.load("model", path)
    check_answer(answer, "ModelFileError", path)
    assert answer["outcome"] == "raised" and expected in answer["message"], answer


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (_pickled_parameter, "stored as object"),
        (_plain_npz_with_pickle, f"no {META_NAME} inside"),
        (_pickled_meta, "not valid JSON"),
    ],
    ids=["pickled parameter", "plain npz of a pickled object array", "pickled metadata"],
)
def test_pickles_in_model_files_are_never_unpickled(worker, scratch, model_base, tmp_path,
                                                    build, expected):  # fmt: skip
    marker = tmp_path / "executed"
    path = scratch / "model.npz"
    path.write_bytes(build(model_base, marker))
    answer = worker.load("model", path)
    check_answer(answer, "ModelFileError", path)
    assert expected in answer["message"], answer
    assert not marker.exists()
