"""The CUDA fast path of ``training.train_step``, and deepnet's other CUDA-only pieces.

On CuPy arrays ``training.train_step`` hands the step to :func:`cuda_train_step`, which
computes what the generic step computes with far fewer kernel launches: one flat buffer per
parameter set (:mod:`.layout`), three fused kernels (:mod:`.kernels`), the updates done by
cuBLAS itself (:mod:`.blas`), and for a full-batch loop one CUDA graph replayed per
iteration (:mod:`.graph`). :mod:`.step` is the step, :mod:`.dispatch` decides when it runs.
:func:`supports` says which networks and updates it handles; the generic step runs the rest.

Also here: the gradient reductions between GPUs (:mod:`.comm`) and the batches streamed to a
GPU from pinned host memory (:mod:`.batches`). Importing this package never imports CuPy.
"""

from deepnet.cuda.dispatch import (
    FAST_ENV,
    GRAPHS_ENV,
    accepts,
    clear_cache,
    cuda_train_step,
    graph_active,
    supports,
)

__all__ = [
    "FAST_ENV",
    "GRAPHS_ENV",
    "accepts",
    "clear_cache",
    "cuda_train_step",
    "graph_active",
    "supports",
]
