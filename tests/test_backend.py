"""Device resolution, namespace inference and the errors a user sees without a GPU."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import deepnet
from deepnet import backend
from deepnet.backend import cuda_available

needs_no_gpu = pytest.mark.skipif(cuda_available(), reason="checks the error seen without a GPU")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("DEEPNET_DEVICE", raising=False)


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


def test_import_does_not_import_cupy():
    code = "import sys, deepnet; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


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
