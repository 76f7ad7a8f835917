"""The update's product for a row-major float32 X: ``W1 - (lr G) @ X.T`` against
``W1 - input_gradient(lr G, X)`` (docs/benchmarks.md, "Layout of X"), alternating in one run.

usage: ``python benchmarks/update_form.py`` (one BLAS thread; about 10 s)
"""

from __future__ import annotations

import time

import numpy as np
from threadpoolctl import threadpool_limits

from deepnet.step import input_gradient


def main() -> None:
    """Print the medians (IQR) of both forms at m = 64, 209 and 1024."""
    threadpool_limits(1)
    rng = np.random.default_rng(0)
    for m in (64, 209, 1024):
        X = np.ascontiguousarray(rng.integers(0, 256, size=(m, 12288)).T / 255.0, np.float32)
        W1 = rng.standard_normal((20, 12288)).astype(np.float32)
        G = 0.0075 * rng.standard_normal((20, m)).astype(np.float32)
        forms = {
            "W1 - (lr G) @ X.T": lambda W1=W1, G=G, X=X: W1 - G @ X.T,
            "W1 - input_gradient(lr G, X)": lambda W1=W1, G=G, X=X: W1 - input_gradient(G, X),
        }
        times: dict[str, list[float]] = {name: [] for name in forms}
        for _ in range(3):  # warm-up
            for form in forms.values():
                form()
        for _ in range(40 if m < 1024 else 15):
            for name, form in forms.items():
                start = time.perf_counter()
                form()
                times[name].append(time.perf_counter() - start)
        cells = []
        for name, values in times.items():
            q1, median, q3 = np.percentile(values, [25, 50, 75]) * 1e3
            cells.append(f"{name}: {median:.2f} ({q3 - q1:.2f})")
        old, new = (float(np.median(v)) for v in times.values())
        print(f"m={m} float32 row-major: {'; '.join(cells)}; old/new {old / new:.2f}x")


if __name__ == "__main__":
    main()
