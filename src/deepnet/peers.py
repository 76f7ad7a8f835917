"""Where the benchmark peers used to live: they are :mod:`deepnet.bench.peers` now."""

from deepnet.bench.peers import (
    TorchStep,
    course_fit,
    course_predict,
    course_step,
    torch_available,
    torch_cuda_available,
)

__all__ = [
    "TorchStep", "course_fit", "course_predict", "course_step", "torch_available",
    "torch_cuda_available",
]  # fmt: skip
