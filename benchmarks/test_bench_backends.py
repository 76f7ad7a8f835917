"""deepnet's step on PyTorch tensors and JAX arrays beside each library's own way of training.

Each group is one model, dtype and library on one device. Its rows:

- ``deepnet``: :func:`deepnet.training.train_step` on that library's arrays (the generic
  fused step, eager: every operation is dispatched one by one);
- ``deepnet_gram``: one steady-state iteration of the full-batch Gram path, what
  ``fit``/``L_layer_model`` run by default at full batch (K = X.T @ X is set up before);
- the peer: for torch, :class:`deepnet.bench.peers.TorchStep` (``nn.Linear`` layers,
  ``BCEWithLogitsLoss``, ``backward()``, ``optim.SGD``); for JAX, :class:`JaxStep`, the same
  network and step written the JAX way: ``jax.value_and_grad`` of a pure loss over a
  parameter pytree, the update in the same ``jax.jit``-compiled function.

All start from the same host parameters (seed 1, lecun) and the same data (the course's
shape, m = 209, synthetic pixels). float64 JAX cases run inside ``jax.enable_x64``. GPU rows
(torch:cuda, jax:gpu) are skipped, visibly, where absent.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pytest

from conftest import DTYPES, LEARNING_RATE, MODELS, host_data, measure
from deepnet.backend import synchronize, to_device
from deepnet.bench.peers import TorchStep
from deepnet.fastpath import GramSteps
from deepnet.initialization import draw_parameters
from deepnet.training import like, train_step

M = 209
PLACES = [
    "torch:cpu",
    pytest.param("torch:cuda", marks=pytest.mark.gpu),
    "jax:cpu",
    pytest.param("jax:gpu", marks=pytest.mark.gpu),
]
WHO = ["deepnet", "deepnet_gram", "peer"]


class JaxStep:
    """The course's network and gradient-descent step, written the JAX way.

    A pure loss of a parameter pytree (``[(W1, b1), ...]``, W as (n_out, n_in)), on X as
    (m, n_x); ``jax.value_and_grad`` and the SGD update in one ``jax.jit`` function. The
    cost is the course's cross-entropy from the logits (``log(1 + exp(-|z|))`` form).
    """

    def __init__(
        self, host_parameters: dict[str, np.ndarray], X: np.ndarray, Y: np.ndarray,
        learning_rate: float, *, device: Any, dtype: str,
    ) -> None:  # fmt: skip
        import jax
        import jax.numpy as jnp

        self.jax = jax
        L = len(host_parameters) // 2
        put = lambda a: jax.device_put(np.asarray(a, dtype=dtype), device)  # noqa: E731
        self.params = [
            (put(host_parameters[f"W{i}"]), put(host_parameters[f"b{i}"][:, 0]))
            for i in range(1, L + 1)
        ]
        self.X, self.Y = put(np.asarray(X).T), put(np.asarray(Y).reshape(-1))

        def loss(params: list, X: Any, Y: Any) -> Any:
            A = X
            for W, b in params[:-1]:
                A = jax.nn.relu(A @ W.T + b)
            W, b = params[-1]
            z = (A @ W.T + b)[:, 0]
            return jnp.mean(jnp.maximum(z, 0) - z * Y + jnp.log1p(jnp.exp(-jnp.abs(z))))

        @jax.jit
        def step(params: list, X: Any, Y: Any) -> tuple[list, Any]:
            cost, grads = jax.value_and_grad(loss)(params, X, Y)
            new = jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)
            return new, cost

        self._step = step

    def __call__(self) -> Any:
        """One step; returns the cost (before the step)."""
        self.params, cost = self._step(self.params, self.X, self.Y)
        return cost

    def synchronize(self) -> None:
        """Wait for the step's results."""
        self.jax.block_until_ready(self.params)


def _place(place: str, dtype: str) -> tuple[Any, contextlib.AbstractContextManager]:
    """The resolved backend (skipping, visibly, where absent) and the JAX x64 context."""
    library = place.split(":")[0]
    pytest.importorskip(library)
    from deepnet.backend import resolve_backend
    from deepnet.errors import DeviceError

    try:
        chosen = resolve_backend(place)
    except DeviceError as exc:
        pytest.skip(f"{place}: {exc}")
    if library == "jax" and dtype == "float64":
        import jax

        return chosen, jax.enable_x64(True)
    return chosen, contextlib.nullcontext()


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("place", PLACES)
def test_backend_train_step(benchmark, place: str, model: str, dtype: str, who: str) -> None:
    """One full-batch gradient-descent step: deepnet on the library's arrays vs its peer."""
    chosen, context = _place(place, dtype)
    library = chosen.library
    benchmark.group = f"backends train_step {model} m={M} {dtype} {place}"
    host = draw_parameters(MODELS[model], "lecun", seed=1)
    X_host, Y_host = host_data(M)
    with context:
        if who == "peer" and library == "torch":
            fn: Any = TorchStep(
                host, X_host, Y_host, LEARNING_RATE, device=chosen.device.split(":")[0],
                dtype=dtype,
            )  # fmt: skip
            sync = fn.synchronize
        elif who == "peer":
            fn = JaxStep(host, X_host, Y_host, LEARNING_RATE, device=chosen.native, dtype=dtype)
            sync = fn.synchronize
        else:
            X, Y = to_device(X_host, str(chosen), dtype), to_device(Y_host, str(chosen), dtype)
            state: dict[str, Any] = {"params": like(host, X)}
            if who == "deepnet_gram":
                steps = GramSteps(state["params"], X, Y, LEARNING_RATE)

                def fn() -> Any:
                    cost = steps.run(0)  # one iteration; the state moves on, as in fit
                    state["params"] = {**steps.rest, "P": steps.first.P}
                    return cost
            else:

                def fn() -> Any:
                    state["params"], cost = train_step(state["params"], X, Y, LEARNING_RATE)
                    return cost

            def sync() -> None:  # JAX has no device-wide wait: wait for the new arrays
                synchronize(chosen, *state["params"].values())

        peer = {"torch": "torch.nn + autograd", "jax": "jax.jit(value_and_grad)"}[library]
        measure(
            benchmark, fn, examples=M, device=str(chosen), sync=sync, dtype=dtype,
            implementation=peer if who == "peer" else who,
        )  # fmt: skip
