"""One training step with the second course's optimizers at the 12288-dim input.

Each group is one batch size and dtype of the 4-layer model; its rows are deepnet's plain
gradient-descent step, its momentum step and its Adam step (the generic step, as at
mini-batches: the update of every array, W1's 246k weights included), and PyTorch's
``torch.optim.SGD`` and ``torch.optim.Adam`` on the same network and data. The goal
(issue 11): an Adam step at most 1.15x the plain step, since Adam's update is elementwise
on 246k parameters next to two 12288-wide products. ``test_adam_overhead`` measures that
ratio directly, the two steps interleaved so that a busy machine slows both alike.

A quick check that they run (about a minute on 2 cores):
``python -m pytest benchmarks/test_bench_optim.py --benchmark-only -k "209 and float64"``.
"""

from __future__ import annotations

import statistics
import time

import pytest

from conftest import (
    DEVICES,
    LEARNING_RATE,
    MODELS,
    device_data,
    host_data,
    measure,
    need_device,
    need_torch,
)
from deepnet.bench.peers import TorchStep
from deepnet.engine.sources import ParameterSteps
from deepnet.initialization import draw_parameters
from deepnet.optim import GradientDescent
from deepnet.optimizers import Adam, Momentum
from deepnet.training import like

BATCHES = [64, 209]
DTYPES = ["float64", "float32"]
OPTIMIZERS = {
    "gd": lambda: GradientDescent(LEARNING_RATE),
    "momentum": lambda: Momentum(LEARNING_RATE, 0.9),
    "adam": lambda: Adam(0.0007),
}
IMPLEMENTATIONS = [
    *(f"deepnet_{name}-cpu" for name in OPTIMIZERS),
    *(pytest.param(f"deepnet_{name}-cuda", marks=pytest.mark.cuda) for name in OPTIMIZERS),
    "torch_sgd-cpu",
    "torch_adam-cpu",
    pytest.param("torch_adam-cuda", marks=pytest.mark.cuda),
]


def _parameters() -> dict:
    return draw_parameters(MODELS["4-layer"], "he", seed=1)


class TorchAdamStep(TorchStep):
    """The peer's step with ``torch.optim.Adam`` (the course's beta1, beta2 and epsilon)."""

    def __init__(self, *args, learning_rate: float, **kwargs) -> None:
        super().__init__(*args, learning_rate, **kwargs)
        self.optimizer = self.torch.optim.Adam(
            self.model.parameters(), lr=learning_rate, betas=(0.9, 0.999), eps=1e-8
        )


class DeepnetStep:
    """deepnet's generic step with an optimizer, its state carried from call to call."""

    def __init__(self, name: str, X, Y) -> None:
        self.X, self.Y, self.i = X, Y, 0
        self.steps = ParameterSteps(like(_parameters(), X), OPTIMIZERS[name]())

    def __call__(self):
        self.i += 1
        return self.steps.step(self.X, self.Y, self.i)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", BATCHES)
def test_optimizer_step(benchmark, m: int, dtype: str, impl: str) -> None:
    """Forward, cost, backward and the optimizer's update: one step of m examples."""
    who, device = impl.split("-")
    benchmark.group = f"optimizer step 4-layer m={m} {dtype}"
    if who.startswith("torch"):
        need_torch(device)
        X, Y = host_data(m)
        if who == "torch_adam":
            fn = TorchAdamStep(_parameters(), X, Y, learning_rate=0.0007, device=device,
                               dtype=dtype)  # fmt: skip
        else:
            fn = TorchStep(_parameters(), X, Y, LEARNING_RATE, device=device, dtype=dtype)
        measure(benchmark, fn, examples=m, device=device, sync=fn.synchronize, dtype=dtype)
        return
    need_device(device)
    X, Y = device_data(m, device, dtype)
    fn = DeepnetStep(who.split("_")[1], X, Y)
    measure(benchmark, fn, examples=m, device=device, dtype=dtype)


@pytest.mark.parametrize("name", ["momentum", "adam"])
@pytest.mark.parametrize("device", DEVICES)
def test_adam_overhead(benchmark, device: str, name: str) -> None:
    """The optimizer's step time over the plain step's (m = 209, float64), interleaved."""
    need_device(device)
    X, Y = device_data(209, device, "float64")
    plain, other = DeepnetStep("gd", X, Y), DeepnetStep(name, X, Y)
    times: dict[str, list[float]] = {"gd": [], name: []}

    def both() -> None:
        for key, fn in (("gd", plain), (name, other)):
            start = time.perf_counter()
            float(fn())  # reads the cost: waits for the device
            times[key].append(time.perf_counter() - start)

    benchmark.group = "optimizer overhead m=209 float64"
    measure(benchmark, both, examples=2 * 209, device=device, dtype="float64")
    ratio = statistics.median(times[name]) / statistics.median(times["gd"])
    benchmark.extra_info[f"{name}_over_plain"] = ratio
    benchmark.extra_info["goal"] = "adam step <= 1.15x the plain step"
