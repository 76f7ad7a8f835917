"""The course kernels on the 12288-dim input, device by device, and the matmul peak.

Shapes are those of the 4-layer model's first layer (n1 = 20) at each batch size;
the activations run on a (12288, m) array, so they measure elementwise throughput.
Each group holds one kernel at one batch and dtype, with the devices side by side.
"""

from __future__ import annotations

import numpy as np
import pytest

import deepnet
from conftest import BATCHES, DEVICES, DTYPES, N_X, device_data, measure, need_device
from deepnet.backend import _cupy, to_device
from deepnet.step import input_gradient, input_product

N1 = 20


def _small(shape: tuple[int, ...], device: str, dtype: str, seed: int = 0):
    return to_device(np.random.default_rng(seed).standard_normal(shape) * 0.01, device, dtype)


KERNELS = [
    "linear_forward",
    "linear_backward",
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "compute_cost",
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", BATCHES)
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel(benchmark, kernel: str, m: int, dtype: str, device: str) -> None:
    need_device(device)
    X, Y = device_data(m, device, dtype)
    W, b = _small((N1, N_X), device, dtype), _small((N1, 1), device, dtype, 1)
    dZ = _small((N1, m), device, dtype, 2)
    Z = X - 0.5  # a pre-activation with both signs
    AL = Y * 0.5 + 0.25  # probabilities
    calls = {
        "linear_forward": lambda: deepnet.linear_forward(X, W, b),
        # The course's linear_backward, dA_prev (12288 x m) included.
        "linear_backward": lambda: deepnet.linear_backward(dZ, (X, W, b)),
        "relu": lambda: deepnet.relu(Z),
        "relu_backward": lambda: deepnet.relu_backward(X, Z),
        "sigmoid": lambda: deepnet.sigmoid(Z),
        "sigmoid_backward": lambda: deepnet.sigmoid_backward(X, Z),
        "compute_cost": lambda: deepnet.compute_cost(AL, Y),
    }
    benchmark.group = f"kernel {kernel} m={m} {dtype}"
    measure(benchmark, calls[kernel], examples=m, device=device, kernel=kernel, dtype=dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["column-major", "row-major"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [209, 1024])
@pytest.mark.parametrize("product", ["forward", "update"])
def test_wide_product_layout(
    benchmark, product: str, m: int, dtype: str, layout: str, device: str
) -> None:
    """The step's two 12288-wide products, as train_step computes them, per X layout."""
    need_device(device)
    X, _ = device_data(m, device, dtype)
    if layout == "row-major":
        X = _cupy().ascontiguousarray(X) if device == "cuda" else np.ascontiguousarray(X)
    W1, G = _small((N1, N_X), device, dtype), _small((N1, m), device, dtype, 2)
    lr = 0.0075
    if product == "forward":
        fn = lambda: input_product(W1, X)  # noqa: E731
    else:
        fn = lambda: W1 - input_gradient(lr * G, X)  # noqa: E731
    benchmark.group = f"wide product {product} m={m} {dtype}"
    measure(benchmark, fn, examples=m, device=device, layout=layout, dtype=dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_peak(benchmark, dtype: str, device: str) -> None:
    """A large square GEMM: the machine's matrix-multiply peak, the floor for the wide products.

    ``extra_info["gflops"]`` (from the fastest round) is what docs/benchmarks.md divides
    the step's 4 * n1 * 12288 * m flops by.
    """
    need_device(device)
    n = 2048 if device == "cpu" else 8192
    A = to_device(np.random.default_rng(0).standard_normal((n, n)), device, dtype)
    benchmark.group = f"matmul peak {dtype}"
    measure(benchmark, lambda: A @ A, examples=n, device=device, dtype=dtype, n=n)
    benchmark.extra_info["gflops"] = 2 * n**3 / benchmark.stats.stats.min / 1e9
