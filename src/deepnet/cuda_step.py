"""Alias of :mod:`deepnet.cuda` (the CUDA fast path), kept while imports move over.

``from deepnet import cuda_step`` and every name it offered still work; new code imports
from :mod:`deepnet.cuda` and its modules.
"""

from deepnet.cuda.blas import (
    OP_N,
    OP_T,
    ArrayBlas,
    CublasLib,
    PlannedBlas,
    find_cublas,
    gemm_args,
    rowsum_args,
)
from deepnet.cuda.dispatch import (
    FAST_ENV,
    GRAPHS_ENV,
    CudaOps,
    accepts,
    clear_cache,
    cuda_train_step,
    graph_active,
    supports,
)
from deepnet.cuda.graph import GraphStep
from deepnet.cuda.kernels import KERNEL_OPTIONS, KERNELS, CudaKernels, sigmoid_limit
from deepnet.cuda.layout import Layout
from deepnet.cuda.step import Workspace, copy_parameters, eager_step, packed_address, run_step

__all__ = [
    "FAST_ENV",
    "GRAPHS_ENV",
    "KERNELS",
    "KERNEL_OPTIONS",
    "OP_N",
    "OP_T",
    "ArrayBlas",
    "CublasLib",
    "CudaKernels",
    "CudaOps",
    "GraphStep",
    "Layout",
    "PlannedBlas",
    "Workspace",
    "accepts",
    "clear_cache",
    "copy_parameters",
    "cuda_train_step",
    "eager_step",
    "find_cublas",
    "gemm_args",
    "graph_active",
    "packed_address",
    "rowsum_args",
    "run_step",
    "sigmoid_limit",
    "supports",
]
