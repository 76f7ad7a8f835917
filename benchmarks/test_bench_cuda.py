"""The GPU bandwidth target's case: one float32 step of the 4-layer model at m = 65536.

A step reads X (12288 x 65536 float32, 3.2 GB) twice, so on a GPU it is bound by memory
bandwidth; ``scripts/gpu-check`` compares deepnet's step with that floor and with PyTorch's
CUDA step. GPU only: the CPU rows of the other suites stop at 8192 examples.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from conftest import LEARNING_RATE, MODELS, N_X, measure, need_device, need_torch
from deepnet.backend import to_device
from deepnet.bench.peers import TorchStep
from deepnet.initialization import draw_parameters
from deepnet.training import like, train_step

M = 65536

pytestmark = pytest.mark.cuda


@functools.lru_cache(maxsize=1)
def _host_float32() -> tuple[np.ndarray, np.ndarray]:
    """Synthetic pictures as float32 X (12288, M), example-major as the course's, and Y."""
    rng = np.random.default_rng(M)
    pixels = rng.integers(0, 256, size=(M, N_X), dtype=np.uint8)
    X = (pixels.astype(np.float32) / np.float32(255.0)).T
    Y = (rng.random((1, M)) < 0.35).astype(np.float32)
    return X, Y


@pytest.mark.parametrize("impl", ["deepnet-cuda", "torch-cuda"])
def test_train_step_bandwidth(benchmark, impl: str) -> None:
    """A full-batch step at m = 65536, float32: deepnet's CUDA step beside PyTorch's."""
    benchmark.group = f"train_step 4-layer m={M} float32"
    parameters = draw_parameters(MODELS["4-layer"], "lecun", seed=1)
    if impl == "torch-cuda":
        need_torch("cuda")
        X, Y = _host_float32()
        fn = TorchStep(parameters, X, Y, LEARNING_RATE, device="cuda", dtype="float32")
        measure(benchmark, fn, examples=M, device="cuda", sync=fn.synchronize, dtype="float32")
        return
    need_device("cuda")
    X, Y = (to_device(a, "cuda", "float32") for a in _host_float32())
    params = like(parameters, X)
    measure(
        benchmark,
        lambda: train_step(params, X, Y, LEARNING_RATE),
        examples=M,
        device="cuda",
        dtype="float32",
    )
