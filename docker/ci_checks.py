"""What can be checked of the CUDA install on a machine without a GPU (docker/ci-check.sh).

Run with the python of an environment made by docker/install.sh:
1. NVRTC, from the CUDA wheels, compiles deepnet's fused kernels (with CuPy's headers, as
   CuPy will) for the GPU generations it names: the runtime compiler and its headers are there.
2. The cuBLAS library CuPy uses is found and has every entry point deepnet.cuda.blas binds.
3. Asking for the GPU fails with deepnet's own message, saying that no GPU is usable.
On a machine that has a GPU, 3 reports the GPU instead. Exits 1 on the first failure.
"""

from __future__ import annotations

import os
import sys

ARCHS = ("sm_80", "sm_90")  # A100, H100/H200


def kernel_source() -> str:
    from deepnet.cuda.kernels import KERNELS

    lines = ["#include <cupy/carray.cuh>"]
    for name, (ins, outs, body) in KERNELS.items():
        inputs = [p.split()[1] for p in ins.split(",")]
        outputs = [p.split()[1] for p in outs.split(",")]
        args = [f"const T* {n}_" for n in inputs] + [f"T* {n}_" for n in outputs]
        binds = [f"const T {n} = {n}_[i_];" for n in inputs]
        binds += [f"T& {n} = {n}_[i_];" for n in outputs]
        lines.append(
            f"template <typename T> __global__ void {name}(long n_, {', '.join(args)}) {{"
            " long i_ = blockIdx.x * blockDim.x + threadIdx.x;"
            f" if (i_ < n_) {{ {' '.join(binds)} {body} }} }}"
        )
        for t in ("float", "double"):
            types = [f"const {t}*"] * len(inputs) + [f"{t}*"] * len(outputs)
            lines.append(f"template __global__ void {name}<{t}>(long, {', '.join(types)});")
    return "\n".join(lines) + "\n"


def check_nvrtc() -> None:
    import cupy
    import nvidia.cuda_runtime
    from cupy_backends.cuda.libs import nvrtc

    from deepnet.cuda.kernels import KERNEL_OPTIONS

    includes = [
        os.path.join(os.path.dirname(cupy.__file__), "_core", "include"),
        os.path.join(list(nvidia.cuda_runtime.__path__)[0], "include"),
    ]
    source = kernel_source()
    for arch in ARCHS:
        prog = nvrtc.createProgram(source, "deepnet_kernels.cu", [], [])
        options = [f"-arch={arch}", "-std=c++17", *KERNEL_OPTIONS, *(f"-I{i}" for i in includes)]
        try:
            nvrtc.compileProgram(prog, options)
        except Exception as exc:
            print(f"FAIL: NVRTC could not compile deepnet's kernels for {arch}: {exc}")
            print(nvrtc.getProgramLog(prog))
            sys.exit(1)
        size = len(nvrtc.getCUBIN(prog))
        print(f"ok: NVRTC {nvrtc.getVersion()} compiled the fused kernels for {arch} ({size} B)")


def check_cublas() -> None:
    from deepnet.cuda.blas import find_cublas

    lib = find_cublas(12)
    needed = ["cublasCreate_v2", "cublasDestroy_v2", "cublasSetStream_v2",
              "cublasSetWorkspace_v2", "cublasSgemm_v2", "cublasDgemm_v2",
              "cublasSgemv_v2", "cublasDgemv_v2"]  # fmt: skip
    missing = [s for s in needed if lib is None or not hasattr(lib, s)]
    if missing:
        print(f"FAIL: cuBLAS {'not found' if lib is None else 'lacks ' + ', '.join(missing)}")
        sys.exit(1)
    print(f"ok: cuBLAS found ({lib._name}) with every entry point deepnet binds")


def check_no_gpu_message() -> None:
    import deepnet
    from deepnet.backend import gpu_description

    try:
        deepnet.resolve_device("cuda")
    except deepnet.DeviceError as exc:
        message = str(exc)
        print(f"resolve_device('cuda') -> DeviceError: {message}")
        if "no usable CUDA GPU" not in message and "no CUDA GPU" not in message:
            print("FAIL: the message does not say clearly that no GPU is usable")
            sys.exit(1)
        print("ok: without a GPU, asking for cuda fails with a clear message")
        return
    print(f"ok: a GPU is usable here ({gpu_description()}); the no-GPU message is not checked")


if __name__ == "__main__":
    check_nvrtc()
    check_cublas()
    check_no_gpu_message()
