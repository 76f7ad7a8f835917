"""The blocked step against train_step, alternating 1 and 2 BLAS threads (issue 15, part 2).

    python benchmarks/blocked_compare.py --sizes 209,1024,8192 --rounds 7

Each round times, for each thread count in turn, one call of ``train_step``, of
``blocked_train_step`` with its default block (half the last-level cache) and with blocks
of 64 examples, on the same column-major X (12288 x m, the course's layout). Prints medians
with min-max (ms) and the load average before and after; docs/benchmarks.md keeps the table.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from deepnet.blocked_step import blocked_train_step, default_block
from deepnet.initialization import draw_parameters
from deepnet.training import like, train_step

DIMS = (12288, 20, 7, 5, 1)
LR = 0.0075


def data(m: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = (rng.integers(0, 256, size=(m, DIMS[0]), dtype=np.uint8).T / 255.0).astype(dtype)
    return X, (rng.random((1, m)) < 0.35).astype(dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="209,1024,8192")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    counts = [int(n) for n in args.threads.split(",")]
    print(f"load average before: {os.getloadavg()}")
    print("m     dtype    thr  train_step ms          blocked ms (block)          "
          "blocked64 ms           blocked/step")  # fmt: skip
    for dtype in args.dtypes.split(","):
        for m in (int(s) for s in args.sizes.split(",")):
            X, Y = data(m, dtype)
            params = like(draw_parameters(DIMS, "lecun", 1), X)
            block = default_block(DIMS[0], X.itemsize)
            impls = {
                "step": train_step,
                "blocked": blocked_train_step,
                "blocked64": functools.partial(blocked_train_step, block=64),
            }
            times = {(n, k): [] for n in counts for k in impls}
            for n in counts:  # warm-up
                with threadpool_limits(n, user_api="blas"):
                    for fn in impls.values():
                        fn(params, X, Y, LR)
            for _ in range(args.rounds):
                for n in counts:
                    with threadpool_limits(n, user_api="blas"):
                        for k, fn in impls.items():
                            start = time.perf_counter()
                            fn(params, X, Y, LR)
                            times[n, k].append((time.perf_counter() - start) * 1e3)
            for n in counts:
                cell = {}
                for k in impls:
                    t = times[n, k]
                    cell[k] = f"{statistics.median(t):8.2f} [{min(t):.2f}-{max(t):.2f}]"
                ratio = statistics.median(times[n, "blocked"]) / statistics.median(times[n, "step"])
                print(f"{m:<5} {dtype:8} {n:<4} {cell['step']:22} {cell['blocked']:22} ({block:4}) "
                      f"{cell['blocked64']:22} {ratio:.2f}x", flush=True)  # fmt: skip
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
