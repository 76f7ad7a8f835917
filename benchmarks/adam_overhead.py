"""Where an Adam step's time goes next to the plain step (issue 11's 1.15x goal).

    OPENBLAS_NUM_THREADS=1 python benchmarks/adam_overhead.py --steps 300

For m = 64 and 209 and both dtypes, one process runs deepnet's plain gradient-descent step
and its Adam step alternately (the generic step, 12288-20-7-5-1, the same data) and times
each, and inside the Adam step the update itself (``optimizers.adam_step`` on every array).
The last column is a lower bound for any Adam on this CPU: the plain step plus only the
square root and the division Adam needs per weight, timed alone on W1's shape (NumPy's
vectorised ``sqrt`` and ``divide`` with ``out=``, warm in cache); everything else an update
does (the moments, reading and writing four arrays) counted as free. Medians; the first 20
steps are warm-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import deepnet.optimizers as optimizers
from deepnet.engine.sources import ParameterSteps
from deepnet.initialization import draw_parameters
from deepnet.optim import GradientDescent
from deepnet.training import like

DIMS = [12288, 20, 7, 5, 1]


def sqrt_and_divide_ms(dtype: str, repeats: int = 200) -> float:
    """The median time of one sqrt and one division over W1's 246k weights."""
    rng = np.random.default_rng(0)
    s, v = rng.random((DIMS[1], DIMS[0])).astype(dtype), rng.random((DIMS[1], DIMS[0]))
    v, out = v.astype(dtype), np.empty_like(s)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.sqrt(s, out=out)
        np.divide(v, out, out=out)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def measure(m: int, dtype: str, steps: int) -> dict[str, float]:
    rng = np.random.RandomState(0)
    X = rng.rand(DIMS[0], m).astype(dtype)
    Y = (rng.rand(1, m) > 0.5).astype(dtype)

    def source(optimizer):
        return ParameterSteps(like(draw_parameters(DIMS, "he", seed=1), X), optimizer)

    plain, adam = source(GradientDescent(0.0075)), source(optimizers.Adam(0.0007))
    update, inside = optimizers.adam_step, [0.0]

    def timed_update(*args):
        start = time.perf_counter()
        out = update(*args)
        inside[0] += time.perf_counter() - start
        return out

    optimizers.adam_step = timed_update
    times: dict[str, list[float]] = {"plain": [], "adam": [], "update": []}
    try:
        for i in range(1, steps + 1):
            start = time.perf_counter()
            float(plain.step(X, Y, i))
            times["plain"].append(time.perf_counter() - start)
            inside[0] = 0.0
            start = time.perf_counter()
            float(adam.step(X, Y, i))
            times["adam"].append(time.perf_counter() - start)
            times["update"].append(inside[0])
    finally:
        optimizers.adam_step = update
    return {k: statistics.median(v[20:]) * 1e3 for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}; "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')}")  # fmt: skip
    print("| m | dtype | plain ms | Adam ms | Adam / plain | update in the step ms "
          "| sqrt + divide ms | bound: (plain + sqrt + divide) / plain |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for dtype in ("float32", "float64"):
        floor = sqrt_and_divide_ms(dtype)
        for m in (64, 209):
            r = measure(m, dtype, args.steps)
            print(f"| {m} | {dtype} | {r['plain']:.2f} | {r['adam']:.2f} | "
                  f"{r['adam'] / r['plain']:.3f}x | {r['update']:.2f} | {floor:.2f} | "
                  f"{(r['plain'] + floor) / r['plain']:.3f}x |", flush=True)  # fmt: skip
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
