"""Model files: round trip, a fresh process predicts the same, and damaged files are refused."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from deepnet.backend import cuda_available, namespace_for
from deepnet.errors import ModelFileError
from deepnet.initialization import draw_parameters
from deepnet.kernels import predict_proba
from deepnet.model_io import (
    MAX_PARAMETER_BYTES,
    META_NAME,
    Model,
    check_costs,
    load_model,
    parameter_bytes,
    save_model,
)
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


# ---------------------------------------------------------------------------------------------
# memory caps, recorded costs, class names, special files (issue 13)

BOUNDED_LOAD = """
import json, resource, sys
from deepnet.errors import DeepnetError
from deepnet.model_io import load_model
def vm_size():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
limit = vm_size() + (256 << 20)  # what one load may allocate beyond the imports
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    model = load_model(sys.argv[1])
    print(json.dumps({"loaded": model.layer_dims}))
except DeepnetError as exc:
    print(json.dumps({"refused": str(exc)}))
except MemoryError:
    print(json.dumps({"memory": True}))
"""


def bounded_load(path: Path) -> dict:
    """Load ``path`` in a child process with 256 MiB of address space and 60 s to spare."""
    run = subprocess.run(
        [sys.executable, "-c", BOUNDED_LOAD, str(path)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def deflated_zero_model(path: Path, hidden: int) -> Path:
    """An honest model of zero weights, deflated: (hidden x 12288) float64 in a small file."""
    dims = [12288, hidden, 1]
    meta = json.loads(zipfile.ZipFile(save_model(make_model(), path)).read(META_NAME))
    meta.update(layer_dims=dims, activations=["relu", "sigmoid"])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr(META_NAME, json.dumps(meta))
        for name, shape in (("W1", (hidden, 12288)), ("b1", (hidden, 1)), ("W2", (1, hidden)),
                            ("b2", (1, 1))):  # fmt: skip
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"descr": "<f8", "fortran_order": False, "shape": shape}
            )
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                member.write(header.getvalue())
                left = int(np.prod(shape)) * 8
                while left:
                    member.write(bytes(min(left, 1 << 24)))
                    left -= min(left, 1 << 24)
    return path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc: Linux")
def test_a_deflated_model_cannot_expand_beyond_64_times(tmp_path: Path):
    path = deflated_zero_model(tmp_path / "zeros.npz", hidden=3000)  # 295 MB declared
    assert path.stat().st_size < 2 << 20
    answer = bounded_load(path)
    assert answer == {
        "refused": f"{path}: W1.npy would expand from "
        f"{zipfile.ZipFile(path).getinfo('W1.npy').compress_size} compressed bytes to "
        f"{3000 * 12288 * 8 + 128}, more than 64 times; refused as a decompression bomb"
    }
    # a model of real (random) weights, deflated, still loads within the same limit
    model = Model(draw_parameters([12288, 100, 1], "lecun", 0), [12288, 100, 1])
    save_model(model, tmp_path / "real.npz")
    with (
        zipfile.ZipFile(tmp_path / "real.npz") as src,
        zipfile.ZipFile(tmp_path / "deflated.npz", "w", compression=zipfile.ZIP_DEFLATED) as dst,
    ):
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    assert bounded_load(tmp_path / "deflated.npz") == {"loaded": [12288, 100, 1]}


def test_declared_parameters_are_capped_before_anything_is_read(tmp_path: Path):
    path = tmp_path / "huge.npz"
    save_model(make_model(), path)
    _rewrite(path, meta_change=lambda m: m.update(layer_dims=[12288, 30000, 1],
                                                  activations=["relu", "sigmoid"]))  # fmt: skip
    with pytest.raises(ModelFileError, match=r"declare 2.7 GiB of float64 parameters, more than"):
        load_model(path)
    assert parameter_bytes([12288, 20, 7, 5, 1], "float64") == 8 * (20 * 12289 + 7 * 21 + 5 * 8 + 6)
    assert parameter_bytes([12288, 20000, 1], "float64") < MAX_PARAMETER_BYTES  # still loads


@pytest.mark.parametrize(
    ("costs_json", "message"),
    [
        ("[0.7, NaN]", "deepnet.json holds NaN, which deepnet never writes"),
        ("[Infinity]", "deepnet.json holds Infinity, which deepnet never writes"),
        ("[0.7, -Infinity]", "deepnet.json holds -Infinity"),
        ("[0.7, 0.6, 1e400]", "recorded cost 2 of 3 is inf; the costs of a deepnet run are finite"),
    ],
)
def test_non_finite_costs_are_refused_on_load(saved: Path, costs_json: str, message: str):
    with zipfile.ZipFile(saved) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    text = members[META_NAME].decode()
    start = text.index('"costs": [')
    members[META_NAME] = (
        text[:start] + '"costs": ' + costs_json + text[text.index("]", start) + 1 :]
    ).encode()
    with zipfile.ZipFile(saved, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ModelFileError, match=f"^{saved}: {re.escape(message)}"):
        load_model(saved)


def test_check_costs_is_the_one_rule_for_checkpoints_too():
    assert check_costs([1, 0.5], "ckpt") == [1.0, 0.5]
    with pytest.raises(ModelFileError, match="^ckpt: recorded cost 1 of 2 is nan"):
        check_costs([0.5, float("nan")], "ckpt")
    with pytest.raises(ModelFileError, match="^ckpt: costs must be a list of numbers"):
        check_costs([True], "ckpt")


def test_class_names_with_terminal_escape_codes_are_refused(saved: Path, tmp_path: Path):
    evil = "cat\x1b[2J\x1b]0;owned\x07"
    _rewrite(saved, meta_change=lambda m: m.update(classes=["non-cat", evil]))
    with pytest.raises(ModelFileError) as caught:
        load_model(saved)
    message = str(caught.value)
    assert message.startswith(
        f"{saved}: class name 'cat\\x1b[2J\\x1b]0;owned\\x07' is not a printable"
    )
    assert message.isprintable()
    model = make_model()
    model.classes = ("non-cat", "cat\n")
    with pytest.raises(ModelFileError, match="^the model to save: class name 'cat\\\\n'"):
        save_model(model, tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()
    model.classes = ("pas un chat", "chat \U0001f408")  # any printable text is a name
    assert load_model(save_model(model, tmp_path / "m.npz")).classes == model.classes


def test_only_regular_files_are_read_as_models(tmp_path: Path):
    os.mkfifo(tmp_path / "fifo.npz")  # nobody writes to it: opening it would block
    began = time.monotonic()
    with pytest.raises(ModelFileError, match="fifo.npz: not a regular file"):
        load_model(tmp_path / "fifo.npz")
    with pytest.raises(ModelFileError, match=f"^{tmp_path}: a folder, not a model file$"):
        load_model(tmp_path)
    assert time.monotonic() - began < 10


AS_NOBODY = """
import os, sys
from deepnet.errors import DeepnetError
from deepnet.model_io import load_model  # imported as root: the stdlib may be in /root
os.setgid(65534); os.setuid(65534)
try:
    load_model(sys.argv[1])
except DeepnetError as exc:
    print(exc)
"""


def test_permission_denied_is_not_called_damaged(saved: Path, request: pytest.FixtureRequest):
    if os.getuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    top = Path(tempfile.mkdtemp(prefix="deepnet-perm-"))  # pytest's tmp_path is private (0700)
    request.addfinalizer(lambda: shutil.rmtree(top))
    top.chmod(0o755)
    saved = Path(shutil.copy(saved, top / "model.npz"))
    saved.chmod(0o600)
    if any(not p.stat().st_mode & 0o001 for p in top.parents):
        pytest.skip("the test folder is not reachable by other users")
    run = subprocess.run(
        [sys.executable, "-c", AS_NOBODY, str(saved)], capture_output=True, text=True, timeout=60
    )
    assert run.stdout.strip() == f"{saved}: permission denied (cannot read the model file)", (
        run.stderr
    )
