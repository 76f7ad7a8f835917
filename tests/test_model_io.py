"""Model files: round trip, a fresh process predicts the same, and damaged files are refused."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from deepnet.backend import cuda_available, namespace_for
from deepnet.errors import ModelFileError
from deepnet.initialization import draw_parameters
from deepnet.kernels import predict_proba
from deepnet.model_io import META_NAME, Model, load_model, save_model
from deepnet.training import L_layer_model

DIMS = [12288, 5, 3, 1]


def make_model(dtype: str = "float64", parameters=None) -> Model:
    parameters = draw_parameters(DIMS, "lecun", 3) if parameters is None else parameters
    return Model(
        parameters=parameters,
        layer_dims=list(DIMS),
        dtype=dtype,
        training={"learning_rate": 0.0075, "num_iterations": 10, "seed": 3},
        costs=[0.7, 0.6],
    )


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return save_model(make_model(), tmp_path / "model.npz")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_round_trip_keeps_parameters_and_metadata(tmp_path: Path, dtype: str):
    model = make_model(dtype)
    loaded = load_model(save_model(model, tmp_path / "m.npz"))
    assert loaded.layer_dims == DIMS and loaded.dtype == dtype
    assert loaded.classes == ("non-cat", "cat") and loaded.model == "L-layer"
    assert loaded.activations == ["relu", "relu", "sigmoid"]
    assert loaded.costs == [0.7, 0.6] and loaded.training["seed"] == 3
    assert loaded.preprocessing["image_shape"] == [64, 64, 3]
    assert loaded.deepnet_version and loaded.created
    assert list(loaded.parameters) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    for key, value in model.parameters.items():
        assert loaded.parameters[key].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(loaded.parameters[key], value.astype(dtype))


def test_file_is_a_plain_npz_without_pickles(saved: Path):
    with np.load(saved, allow_pickle=False) as npz:
        assert {"W1", "b3"} <= set(npz.files)
        assert npz["W1"].shape == (5, 12288)
    with zipfile.ZipFile(saved) as archive:
        meta = json.loads(archive.read(META_NAME))
    assert meta["format"] == "deepnet-model" and meta["format_version"] == 1
    assert meta["layer_dims"] == DIMS and meta["classes"] == ["non-cat", "cat"]


def test_parameters_from_another_array_library_are_saved_on_the_host(tmp_path: Path):
    xp = pytest.importorskip("array_api_strict")
    host = draw_parameters(DIMS, "lecun", 3)
    model = make_model(parameters={k: xp.asarray(v) for k, v in host.items()})
    loaded = load_model(save_model(model, tmp_path / "m.npz"))
    for key, value in host.items():
        assert isinstance(loaded.parameters[key], np.ndarray)
        np.testing.assert_array_equal(loaded.parameters[key], value)


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA GPU (none usable here)")
def test_model_trained_on_the_gpu_loads_as_host_arrays(tmp_path: Path):
    xp = namespace_for("cuda")
    host = draw_parameters(DIMS, "lecun", 3)
    model = make_model(parameters={k: xp.asarray(v) for k, v in host.items()})
    loaded = load_model(save_model(model, tmp_path / "m.npz"))
    for key, value in host.items():
        assert type(loaded.parameters[key]) is np.ndarray
        np.testing.assert_array_equal(loaded.parameters[key], value)


FRESH_PROCESS = """
import sys, numpy as np
from deepnet.model_io import load_model
from deepnet.kernels import predict_proba
model = load_model(sys.argv[1])
np.save(sys.argv[3], predict_proba(np.load(sys.argv[2]), model.parameters))
"""


def test_a_fresh_process_predicts_exactly_the_same(tmp_path: Path):
    rng = np.random.RandomState(0)
    X = rng.rand(12288, 12)
    Y = (rng.rand(1, 12) > 0.5).astype(np.float64)
    parameters, costs = L_layer_model(X, Y, DIMS, num_iterations=20, record_every=5)
    model = Model(parameters=parameters, layer_dims=DIMS, costs=costs)
    path = save_model(model, tmp_path / "trained.npz")
    np.save(tmp_path / "X.npy", X)
    subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, path, tmp_path / "X.npy", tmp_path / "p.npy"],
        check=True,
    )
    here = predict_proba(X, parameters)
    there = np.load(tmp_path / "p.npy")
    np.testing.assert_array_equal(there, here)  # identical, bit for bit
    assert np.any(here > 0.5) or np.any(here < 0.5)


def test_truncated_file_gives_a_clear_error(saved: Path):
    data = saved.read_bytes()
    for keep in (len(data) // 2, len(data) - 10, 100):
        saved.write_bytes(data[:keep])
        with pytest.raises(ModelFileError, match="damaged/truncated"):
            load_model(saved)


def test_flipped_bit_in_a_parameter_is_caught(saved: Path):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as archive:
        info = archive.getinfo("W1.npy")
    data[info.header_offset + 200 + 30 + len("W1.npy")] ^= 0x10  # inside W1's float data
    saved.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="(?i)crc"):
        load_model(saved)


def _rewrite(path: Path, meta_change=None, replace=None, drop=()) -> None:
    """Copy a saved model, changing its metadata or members."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    meta = json.loads(members[META_NAME])
    if meta_change:
        meta_change(meta)
    members[META_NAME] = json.dumps(meta).encode()
    members.update(replace or {})
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            if name not in drop:
                archive.writestr(name, data)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


BAD = {
    "foreign format": (dict(meta_change=lambda m: m.update(format="other")), "not a deepnet"),
    "newer version": (dict(meta_change=lambda m: m.update(format_version=99)), "upgrade deepnet"),
    "bad dims": (dict(meta_change=lambda m: m.update(layer_dims=[12288, -5, 1])), "layer_dims"),
    "smaller dims": (
        dict(meta_change=lambda m: m.update(layer_dims=[12288, 1, 3, 1])),
        "more than its shape",
    ),
    "larger dims": (dict(meta_change=lambda m: m.update(layer_dims=[12288, 6, 3, 1])), "stored as"),
    "absurd dims": (  # refused from layer_dims alone, without allocating 10**13 floats
        dict(meta_change=lambda m: m.update(layer_dims=[12288, 10**9, 3, 1])),
        r"declare 91582.5 GiB of float64 parameters, more than deepnet loads \(2 GiB\)",
    ),
    "preprocessing": (
        dict(meta_change=lambda m: m.update(layer_dims=[100, 5, 3, 1])),
        "does not give 100 inputs",
    ),
    "bad dtype": (dict(meta_change=lambda m: m.update(dtype="int8")), "dtype"),
    "bad activations": (dict(meta_change=lambda m: m.update(activations=["tanh"])), "activations"),
    "missing parameter": (dict(drop=("b2.npy",)), "parameter b2 is missing"),
    "wrong shape": (dict(replace={"W2.npy": _npy(np.zeros((3, 4)))}), "stored as"),
    "wrong dtype": (dict(replace={"b1.npy": _npy(np.zeros((5, 1), np.float32))}), "stored as"),
    "pickled object": (
        dict(replace={"b1.npy": _npy(np.array([None] * 5, dtype=object).reshape(5, 1))}),
        "stored as",
    ),
    "NaN weights": (dict(replace={"b1.npy": _npy(np.full((5, 1), np.nan))}), "NaN"),
    "extra member": (dict(replace={"evil.py": b"print(1)"}), "unexpected members"),
    "not JSON": (dict(replace={META_NAME: b"{nope"}), "not valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_damaged_or_foreign_model_files_are_refused(saved: Path, case: str):
    changes, expected = BAD[case]
    _rewrite(saved, **changes)
    with pytest.raises(ModelFileError, match=expected):
        load_model(saved)


def test_other_files_are_not_models(tmp_path: Path):
    np.savez(tmp_path / "plain.npz", W1=np.zeros((2, 2)))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelFileError, match=f"no {META_NAME} inside"):
        load_model(tmp_path / "plain.npz")
    with pytest.raises(ModelFileError, match="not a readable deepnet model file"):
        load_model(tmp_path / "notes.txt")
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "missing.npz")


def test_a_failed_save_leaves_the_old_file_intact(saved: Path, monkeypatch):
    before = saved.read_bytes()
    calls = []

    def failing_writestr(self, name, data, *args, **kwargs):
        calls.append(name)
        if len(calls) == 3:
            raise OSError("disk full")
        return original(self, name, data, *args, **kwargs)

    original = zipfile.ZipFile.writestr
    monkeypatch.setattr(zipfile.ZipFile, "writestr", failing_writestr)
    with pytest.raises(OSError, match="disk full"):
        save_model(make_model("float32"), saved)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]  # no temporary left
    assert load_model(saved).dtype == "float64"


def test_saving_a_model_that_does_not_match_its_dims_fails(tmp_path: Path):
    model = make_model()
    model.parameters["W2"] = np.zeros((2, 2))
    with pytest.raises(ModelFileError, match="W2 has shape"):
        save_model(model, tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()
