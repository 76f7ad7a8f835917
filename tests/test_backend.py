"""Device resolution, namespace inference and the errors a user sees without a GPU."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import numpy as np
import pytest

import deepnet
from deepnet import backend, install
from deepnet.backend import cuda_available

needs_no_gpu = pytest.mark.skipif(cuda_available(), reason="checks the error seen without a GPU")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("DEEPNET_DEVICE", raising=False)
    monkeypatch.delenv("DEEPNET_BACKEND", raising=False)


def test_default_is_cpu():
    assert backend.resolve_device() == "cpu"


def test_env_var_is_read(monkeypatch):
    monkeypatch.setenv("DEEPNET_DEVICE", " CPU ")
    assert backend.resolve_device() == "cpu"


def test_order_argument_then_context_then_env(monkeypatch):
    monkeypatch.setenv("DEEPNET_DEVICE", "bogus")  # would fail if it were read
    with backend.use_device("cpu"):
        assert backend.resolve_device() == "cpu"
    with backend.use_device("cuda"):
        assert backend.resolve_device("cpu") == "cpu"  # the argument wins over the context
    with pytest.raises(deepnet.DeviceError, match="DEEPNET_DEVICE"):
        backend.resolve_device()


def test_context_is_restored_after_an_error():
    with pytest.raises(RuntimeError), backend.use_device("cuda"):
        raise RuntimeError("boom")
    assert backend.resolve_device() == "cpu"


def test_unknown_device_lists_the_valid_ones(monkeypatch):
    monkeypatch.setenv("DEEPNET_DEVICE", "tpu")
    with pytest.raises(deepnet.DeviceError, match="valid devices are: cpu, cuda"):
        backend.resolve_device()
    with pytest.raises(deepnet.DeviceError, match="'gpu'"):
        backend.use_device("gpu").__enter__()


@needs_no_gpu
def test_cuda_without_gpu_is_an_error_not_a_fallback():
    with pytest.raises(deepnet.DeviceError, match=r"cuda12|nvidia-smi"):
        backend.resolve_device("cuda")
    with pytest.raises(deepnet.DeviceError):
        deepnet.initialize_parameters(3, 2, 1, device="cuda")


@needs_no_gpu
def test_env_cuda_from_a_plain_process_names_the_extra():
    code = "import deepnet; deepnet.initialize_parameters_deep([3, 2, 1])"
    env = {"DEEPNET_DEVICE": "cuda", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "deepnet.errors.DeviceError" in proc.stderr
    assert "cuda12" in proc.stderr or "nvidia-smi" in proc.stderr


def test_import_does_not_import_cupy_torch_or_jax():
    code = "import sys, deepnet; print([m for m in ('cupy', 'torch', 'jax') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_namespace_inference_follows_the_inputs():
    strict = pytest.importorskip("array_api_strict")
    a = strict.asarray([[1.0]])
    assert backend.array_namespace(a) is strict
    assert backend.device_of(np.zeros(1)) == "cpu"
    assert backend.device_of(a) == "array_api_strict"


def test_mixing_libraries_is_a_clear_error():
    strict = pytest.importorskip("array_api_strict")
    W = np.ones((1, 2))
    A = strict.asarray(np.ones((2, 3)))
    b = np.zeros((1, 1))
    with pytest.raises(deepnet.DeviceError, match="mixed in one call"):
        deepnet.linear_forward(A, W, b)


def test_round_trip_to_device_and_back():
    x = np.arange(6.0).reshape(2, 3)
    y = backend.to_device(x, "cpu", "float32")
    assert y.dtype == np.float32
    np.testing.assert_array_equal(backend.to_numpy(y), x)
    backend.synchronize("cpu")  # a no-op on the CPU, but must not fail


def test_to_numpy_reads_array_api_strict():
    strict = pytest.importorskip("array_api_strict")
    x = strict.asarray([[1.0, 2.0]])
    np.testing.assert_array_equal(backend.to_numpy(x), [[1.0, 2.0]])
    np.testing.assert_array_equal(backend.to_device(x, "cpu"), [[1.0, 2.0]])


# Choosing the library: backend= > use_backend() > $DEEPNET_BACKEND > the device (numpy/cupy).


def test_default_backend_is_numpy_on_the_cpu():
    assert str(backend.resolve_backend()) == "numpy:cpu"
    assert backend.resolve_backend().xp is backend.namespace_for("cpu")


def test_backend_order_argument_then_context_then_env(monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("DEEPNET_BACKEND", "bogus")  # would fail if it were read
    with backend.use_backend("torch"):
        assert str(backend.resolve_backend()) == "torch:cpu"
        assert str(backend.resolve_backend("numpy")) == "numpy:cpu"  # the argument wins
    with pytest.raises(
        deepnet.DeviceError, match=r"unknown backend 'bogus' \(from \$DEEPNET_BACKEND"
    ):
        backend.resolve_backend()
    monkeypatch.setenv("DEEPNET_BACKEND", " Torch ")
    assert str(backend.resolve_backend()) == "torch:cpu"


def test_device_env_keeps_meaning_numpy_or_cupy_and_names_the_device_within_a_library(
    monkeypatch,
):
    pytest.importorskip("torch")
    monkeypatch.setenv("DEEPNET_DEVICE", "cpu")
    assert str(backend.resolve_backend()) == "numpy:cpu"
    assert str(backend.resolve_backend("torch")) == "torch:cpu"
    with pytest.raises(deepnet.DeviceError, match="numpy runs on cpu only"):
        backend.resolve_backend("numpy", "cuda")
    with pytest.raises(deepnet.DeviceError, match="disagree"):
        backend.resolve_backend("numpy", "torch:cpu")


def test_unknown_backend_and_devices_list_the_valid_ones():
    with pytest.raises(deepnet.DeviceError, match="valid backends are: numpy, cupy, torch, jax"):
        backend.resolve_backend("tensorflow")
    with pytest.raises(deepnet.DeviceError, match="name the library too, e.g. 'torch:mps'"):
        backend.resolve_backend(device="mps")
    if importlib.util.find_spec("torch"):
        with pytest.raises(deepnet.DeviceError, match="cpu, cuda, cuda:N, mps"):
            backend.resolve_backend("torch:xpu")
    if importlib.util.find_spec("jax"):
        with pytest.raises(deepnet.DeviceError, match="cpu, gpu, gpu:N, tpu"):
            backend.resolve_backend("jax:npu")


@pytest.mark.parametrize("library", ["torch", "jax"])
def test_missing_library_names_the_install_command(monkeypatch, library):
    monkeypatch.setitem(sys.modules, library, None)  # import now fails, as if not installed
    with pytest.raises(deepnet.DeviceError, match=re.escape(f'pip install -e ".[{library}]"')):
        backend.resolve_backend(library)
    with pytest.raises(deepnet.DeviceError, match="not installed"):
        backend.to_device(np.zeros(2), backend=library)
    assert install.DISTRIBUTION in backend.install_hint(library)


@pytest.mark.parametrize("spec", ["torch:cuda", "torch:cuda:7", "torch:mps", "jax:gpu"])
def test_missing_device_is_an_error_not_a_fallback(spec):
    library = spec.split(":")[0]
    mod = pytest.importorskip(library)
    reachable = {
        "torch:cuda": lambda: mod.cuda.is_available(),
        "torch:cuda:7": lambda: mod.cuda.device_count() > 7,
        "torch:mps": lambda: mod.backends.mps.is_available(),
        "jax:gpu": lambda: any(d.platform == "gpu" for d in mod.devices()),
    }[spec]
    if reachable():
        pytest.skip(f"{spec} exists here")
    with pytest.raises(deepnet.DeviceError, match=f"use backend '{library}:cpu'"):
        backend.resolve_backend(spec)


def test_jax_in_32_bit_mode_refuses_float64_rather_than_downcasting():
    jax = pytest.importorskip("jax")
    with jax.enable_x64(False), pytest.raises(deepnet.DeviceError, match="jax_enable_x64"):
        backend.to_device(np.zeros((2, 2)), "jax")
    with jax.enable_x64(False):
        assert str(backend.to_device(np.zeros((2, 2)), "jax", "float32").dtype) == "float32"


def test_to_device_and_back_on_the_grid(backend, host):
    """device_of names a place to_device accepts back; dtype and device are kept."""
    x = np.arange(6.0).reshape(2, 3)
    y = backend.asarray(x)
    if backend.name == "array_api_strict":
        pytest.skip("array-api-strict is a test namespace, not a deepnet backend")
    where = deepnet.backend.device_of(y)
    moved = deepnet.to_device(x, where, backend.dtype)
    assert backend.is_own(moved) and moved.dtype == y.dtype
    assert deepnet.backend.device_of(moved) == where
    np.testing.assert_array_equal(host(moved), x.astype(backend.dtype))
    assert deepnet.to_numpy(moved).dtype == np.dtype(backend.dtype)
    assert isinstance(deepnet.to_device(moved, "cpu"), np.ndarray)  # back to NumPy
    deepnet.synchronize(where, moved)
    deepnet.synchronize(None, moved)  # the device read off the array


def test_tensors_on_different_devices_are_a_clear_error():
    torch = pytest.importorskip("torch")
    W = torch.ones((1, 2), dtype=torch.float64)
    A = torch.ones((2, 3), dtype=torch.float64, device="meta")  # a second device, on any machine
    with pytest.raises(deepnet.DeviceError, match=r"different devices \(cpu, meta\)"):
        deepnet.linear_forward(A, W, torch.zeros((1, 1), dtype=torch.float64))
