"""The ordinary step run block by block of examples, reading X from memory once.

:func:`deepnet.training.train_step` makes two passes over X: ``W1 @ X`` forward and
``G1 @ X.T`` for dW1. When X is larger than the last-level cache, each pass streams it
from memory. Examples are independent up to the sums in dW and in the cost, so a step can
instead take one block of columns at a time: forward it through every layer, back to its
``dZ1``, and add ``G1_b @ X_b.T`` into dW1 while ``X_b`` is still in cache; the parameters
are updated once, after the last block. The result is the same step, summed in another
order (to rounding). Whether it pays depends on X against the cache and on the BLAS's
efficiency on thinner products: docs/benchmarks.md, "Blocked step".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import array_api_compat
import numpy as np

from deepnet.backend import array_namespace
from deepnet.step import backward_above_input, in_course_order, input_product

Array = Any


def last_level_cache(default: int = 32 << 20) -> int:
    """Bytes of the largest CPU cache (sysfs), or ``default`` when it cannot be read."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip().upper()
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=default)


def default_block(n_x: int, itemsize: int, cache: int | None = None) -> int:
    """Examples per block: a block of X fills at most half the last-level cache, >= 16."""
    cache = last_level_cache() if cache is None else cache
    return max(16, (cache // 2) // max(1, n_x * itemsize))


def blocked_train_step(
    parameters: dict[str, Array],
    X: Array,
    Y: Array,
    learning_rate: float,
    block: int | None = None,
) -> tuple[dict[str, Array], Array]:
    """One full-batch gradient-descent step on (X, Y), block by block of examples.

    Same contract as :func:`deepnet.training.train_step`: returns (new parameters, the
    cost before the step as a 0-d array). ``block`` examples at a time (default:
    :func:`default_block`); a block of at least m is ``train_step``'s arithmetic, bit for bit.
    """
    xp = array_namespace(X, Y)
    n_x, m = X.shape
    if block is None:
        block = default_block(n_x, 8 if X.dtype == xp.float64 else 4)
    W1 = parameters["W1"]
    in_place = array_api_compat.is_numpy_array(X)  # NumPy: accumulate without temporaries
    step = buffer = None  # the sum of (lr * G1_b) @ X_b.T: W1's whole change
    sums: dict[str, Array] = {}
    cost = None
    for start in range(0, m, block):
        stop = min(start + block, m)  # the Array API leaves out-of-bounds slices unspecified
        Xb, Yb = X[:, start:stop], Y[:, start:stop]
        grads, G, c = backward_above_input(parameters, input_product(W1, Xb), Yb, m=m)
        cost = c if cost is None else cost + c
        for key, g in grads.items():
            sums[key] = g if key not in sums else sums[key] + g
        # As train_step: the small G1 is scaled, not the n1 x n_x product.
        if step is None:
            step = (learning_rate * G) @ Xb.T
        elif in_place:
            buffer = np.empty_like(step) if buffer is None else buffer
            np.matmul(learning_rate * G, Xb.T, out=buffer)
            step += buffer
        else:
            step = step + (learning_rate * G) @ Xb.T
    updated = {key[1:]: parameters[key[1:]] - learning_rate * g for key, g in sums.items()}
    updated["W1"] = W1 - step
    return in_course_order(updated), cost
