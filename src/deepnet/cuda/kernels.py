"""The fused elementwise kernels of the CUDA step, as NVRTC sources for CuPy.

Three kernels replace the generic step's chains of array operations: bias + ReLU; the
output layer (sigmoid, dZL = (AL - Y) / m and the cost terms, from the logits); and the
ReLU mask of the backward pass. Each body mirrors the generic step's NumPy expressions and
is compiled with ``--fmad=false`` so every rounding is kept. The CPU tests compile the same
bodies as C++ with g++, and the CUDA image's CI check compiles them with NVRTC.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

Array = Any

# (inputs, outputs, body) of each kernel; CuPy compiles them for float32 and float64.
KERNELS = {
    "bias_relu": (
        "T z, T bias",
        "T act",
        # max(z + b, 0), NaN passing through as in xp.maximum
        "const T s = z + bias; act = s < (T)0 ? (T)0 : s;",
    ),
    "output_layer": (
        "T zl, T bias, T label, T count, T limit",
        "T dz, T loss",
        # kernels.sigmoid (|Z| capped where e^-|Z| would leave the normal range), then
        # dZL = (AL - Y) / m, and the cost term logaddexp(ZL, 0) - Y ZL over m, which stays
        # finite when AL rounds to 0 or 1. NaN goes through every branch, as in NumPy.
        "const T s = zl + bias;"
        " const T a = fabs(s);"
        " const T e = exp(-(a > limit ? limit : a));"
        " const T p = s >= (T)0 ? (T)1 / ((T)1 + e) : e / ((T)1 + e);"
        " const T lae = (s > (T)0 ? s : (T)0) + log1p(exp(-a));"
        " dz = (p - label) / count;"
        " loss = (lae - label * s) / count;",
    ),
    "relu_mask": (
        "T grad, T act",
        "T dz",
        "dz = act > (T)0 ? grad : (T)0;",
    ),
}
KERNEL_OPTIONS = ("--fmad=false",)


def sigmoid_limit(dtype: Any) -> float:
    """Where kernels.sigmoid caps |Z|: beyond it e^-|Z| would no longer be a normal number."""
    return -math.log(np.finfo(dtype).smallest_normal)


class CudaKernels:
    """The fused elementwise kernels as CuPy ElementwiseKernels (compiled on first use)."""

    def __init__(self, cp: Any):
        for name, (ins, outs, body) in KERNELS.items():
            kernel = cp.ElementwiseKernel(
                ins, outs, body, name=f"deepnet_{name}", options=KERNEL_OPTIONS
            )
            setattr(self, f"_{name}", kernel)

    def bias_relu(self, z: Array, bias: Array, out: Array) -> None:
        self._bias_relu(z, bias, out)

    def output_layer(
        self, zl: Array, bias: Array, label: Array, count: int, dz: Array, loss: Array
    ) -> None:
        t = zl.dtype.type
        self._output_layer(zl, bias, label, t(count), t(sigmoid_limit(zl.dtype)), dz, loss)

    def relu_mask(self, grad: Array, act: Array, out: Array) -> None:
        self._relu_mask(grad, act, out)


@functools.cache
def cuda_kernels(cp: Any) -> CudaKernels:
    """The kernels for the CuPy module ``cp``, built once per process."""
    return CudaKernels(cp)
