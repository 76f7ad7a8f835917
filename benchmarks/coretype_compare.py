"""The ordinary step under OpenBLAS's kernel sets (``OPENBLAS_CORETYPE``), side by side.

    python benchmarks/coretype_compare.py --coretypes SkylakeX,Haswell --rounds 5

OpenBLAS picks its kernels when it loads, from the CPU it finds (an AMD Zen 4 gets the
AVX-512 "SkylakeX" set); ``OPENBLAS_CORETYPE`` overrides that, and only before NumPy is
imported, so each measurement runs in a fresh process. Each round starts one process per
kernel set, in turn; a process times ``train_step``, the two wide products alone (as
train_step calls them) and PyTorch's step on the same data (median of ``--calls`` calls
each, alternating), and the square-GEMM rate (best of 3), with one BLAS thread and one
PyTorch thread unless ``--threads`` says otherwise; ``--course N`` adds ``L_layer_model``
runs of N iterations on the course's pictures (``$DEEPNET_DATA``; median of 3 each).
Prints, per kernel set, medians over the rounds with min-max (ms), the step over PyTorch's
and over the GEMM floor (the two products at the square rate measured in the same
process); docs/benchmarks.md keeps the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time, statistics
import numpy as np
from threadpoolctl import threadpool_info
from deepnet.bench.peers import TorchStep
from deepnet.initialization import draw_parameters
from deepnet.step import input_gradient, input_product
from deepnet.training import like, train_step
import torch

sizes, dtypes, calls, threads, course = json.loads(sys.argv[1])
torch.set_num_threads(threads)
DIMS, LR = (12288, 20, 7, 5, 1), 0.0075
arch = [i.get("architecture") for i in threadpool_info() if i.get("internal_api") == "openblas"]
out = {"architecture": arch[0] if arch else None, "rows": []}
def seconds(fn):
    start = time.perf_counter(); fn(); return time.perf_counter() - start
for dtype in dtypes:
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(dtype)
    a @ a
    rate = 2 * 2048**3 / min(seconds(lambda: a @ a) for _ in range(3))
    for m in sizes:
        rng = np.random.default_rng(0)
        X64 = rng.integers(0, 256, size=(m, DIMS[0]), dtype=np.uint8).T / 255.0
        Y64 = (rng.random((1, m)) < 0.35).astype(np.float64)
        X, Y = X64.astype(dtype), Y64.astype(dtype)
        host = draw_parameters(DIMS, "lecun", 1)
        params = like(host, X)
        G1 = np.full((DIMS[1], m), 1e-3, dtype)
        peer = TorchStep(host, X64, Y64, LR, dtype=dtype)
        fns = {
            "train_step": lambda: train_step(params, X, Y, LR),
            "two_products": lambda: (input_product(params["W1"], X), input_gradient(LR * G1, X)),
            "torch": peer,
        }
        times = {k: [] for k in fns}
        for fn in fns.values():
            fn(), fn()  # warm-up
        for _ in range(calls):
            for k, fn in fns.items():
                times[k].append(seconds(fn) * 1e3)
        row = {k: statistics.median(v) for k, v in times.items()}
        row.update(m=m, dtype=dtype, floor=2 * (2 * DIMS[1] * DIMS[0] * m) / rate * 1e3,
                   gflops=rate / 1e9)
        out["rows"].append(row)
if course:  # L_layer_model on the course's pictures ($DEEPNET_DATA), full batch and 64
    sys.path.insert(0, "benchmarks")
    from conftest import real_data
    from deepnet import L_layer_model
    X64, Y64 = real_data()
    out["course"] = []
    for dtype in dtypes:
        X, Y = X64.astype(dtype), Y64.astype(dtype)
        for batch in (None, 64):
            run = lambda: L_layer_model(X, Y, list(DIMS), LR, course, dtype=dtype, batch_size=batch)
            run()
            ms = statistics.median(seconds(run) * 1e3 for _ in range(3))
            out["course"].append({"dtype": dtype, "batch": batch or X.shape[1], "ms": ms})
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coretypes", default="SkylakeX,Haswell")
    parser.add_argument("--sizes", default="209,1024")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--course",
        type=int,
        default=0,
        help="also time L_layer_model for this many iterations on $DEEPNET_DATA",
    )
    args = parser.parse_args()
    if args.course and not os.environ.get("DEEPNET_DATA"):
        parser.error("--course needs DEEPNET_DATA (the folder with train_catvnoncat.h5)")
    cores = args.coretypes.split(",")
    spec = json.dumps([[int(s) for s in args.sizes.split(",")], args.dtypes.split(","),
                       args.calls, args.threads, args.course])  # fmt: skip
    n = str(args.threads)
    print(f"load average before: {os.getloadavg()}; BLAS and PyTorch threads: {n}")
    results: dict[str, list[dict]] = {c: [] for c in cores}
    for _ in range(args.rounds):
        for core in cores:
            env = {**os.environ, "OPENBLAS_CORETYPE": core, "OPENBLAS_NUM_THREADS": n,
                   "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}  # fmt: skip
            done = subprocess.run([sys.executable, "-c", CHILD, spec], env=env, check=True,
                                  capture_output=True, text=True, timeout=600)  # fmt: skip
            results[core].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("| kernels | m | dtype | train_step ms | two products ms | PyTorch ms | step / PyTorch "
          "| floor ms | step / floor |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for core in cores:
        arch = results[core][0]["architecture"]
        for i, row in enumerate(results[core][0]["rows"]):
            runs = [r["rows"][i] for r in results[core]]

            def cell(key: str, runs: list[dict] = runs) -> str:
                v = [r[key] for r in runs]
                return f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})"

            step = statistics.median(r["train_step"] for r in runs)
            torch_ms = statistics.median(r["torch"] for r in runs)
            floor = statistics.median(r["floor"] for r in runs)
            print(f"| {arch} | {row['m']} | {row['dtype']} | {cell('train_step')} | "
                  f"{cell('two_products')} | {cell('torch')} | {step / torch_ms:.2f}x | "
                  f"{floor:.2f} | {step / floor:.2f}x |", flush=True)  # fmt: skip
    if args.course:
        print(f"\n| kernels | dtype | batch | L_layer_model, {args.course} iterations, ms |")
        print("|---|---|---|---|")
        for core in cores:
            for i, row in enumerate(results[core][0]["course"]):
                v = [r["course"][i]["ms"] for r in results[core]]
                print(
                    f"| {results[core][0]['architecture']} | {row['dtype']} | {row['batch']} | "
                    f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f}) |"
                )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
