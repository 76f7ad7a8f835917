"""The blocked step is train_step's step, summed in another order."""

from __future__ import annotations

import numpy as np
import pytest

from deepnet.blocked_step import blocked_train_step, default_block, last_level_cache
from deepnet.initialization import draw_parameters
from deepnet.training import like, train_step


def data(n_x: int = 300, m: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(m, n_x)).T / 255.0
    return X, (rng.random((1, m)) < 0.4).astype(np.float64)


@pytest.mark.parametrize("block", [1, 7, 16, 50, 64])
@pytest.mark.parametrize("dims", [[300, 1], [300, 7, 1], [300, 20, 7, 5, 1]])
def test_same_step_as_train_step(backend, host, dims, block):
    X64, Y64 = data()
    X, Y = backend.asarray(X64), backend.asarray(Y64)
    params = like(draw_parameters(dims, "lecun", 1), X)
    want, want_cost = train_step(params, X, Y, 0.05)
    got, cost = blocked_train_step(params, X, Y, 0.05, block=block)
    assert list(got) == list(want) and backend.is_own(got["W1"])
    assert float(cost) == pytest.approx(float(want_cost), rel=1e-13)
    for k, v in want.items():
        np.testing.assert_allclose(host(got[k]), host(v), rtol=1e-11, atol=1e-14, err_msg=k)


def test_one_block_is_train_step_bit_for_bit():
    X, Y = data()
    params = like(draw_parameters([300, 20, 7, 5, 1], "lecun", 1), X)
    want, want_cost = train_step(params, X, Y, 0.05)
    got, cost = blocked_train_step(params, X, Y, 0.05, block=X.shape[1])
    assert float(cost) == float(want_cost)
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_float32_and_row_major_inputs():
    X64, Y64 = data()
    for X in (X64.astype(np.float32), np.ascontiguousarray(X64)):
        Y = Y64.astype(X.dtype)
        params = like(draw_parameters([300, 20, 7, 5, 1], "lecun", 1), X)
        want, _ = train_step(params, X, Y, 0.05)
        got, _ = blocked_train_step(params, X, Y, 0.05, block=8)
        tol = dict(rtol=1e-5, atol=1e-6) if X.dtype == np.float32 else dict(rtol=1e-11)
        for k, v in want.items():
            np.testing.assert_allclose(got[k], v, **tol, err_msg=k)


def test_default_block_fills_half_the_cache():
    assert default_block(12288, 4, cache=32 << 20) == (16 << 20) // (12288 * 4)
    assert default_block(12288, 8, cache=1 << 20) == 16  # never thinner than 16 examples
    assert last_level_cache() >= 1 << 10
