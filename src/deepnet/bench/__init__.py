"""``deepnet bench``: a short speed table without pytest.

For each device, dtype and batch size it times one training step of deepnet
(:func:`deepnet.training.train_step`), one steady-state iteration of the full-batch Gram
path (:mod:`deepnet.fastpath`, what ``fit`` runs by default at full batch), the course's
own formulation (float64 only) and PyTorch (when installed, on the same device), and
prints examples per second with deepnet's time as a fraction of each peer's. The
pytest-benchmark suites in ``benchmarks/`` measure more, with statistics.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepnet import threads
from deepnet.backend import cuda_available, synchronize, to_device
from deepnet.bench.peers import TorchStep, course_step, torch_available, torch_cuda_available
from deepnet.constants import DTYPES
from deepnet.fastpath import GramSteps
from deepnet.initialization import check_layer_dims, draw_parameters
from deepnet.install import install_hint
from deepnet.training import like, train_step

LEARNING_RATE = 0.0075
WARMUP_S = 0.2
DEVICES = ("cpu", "cuda")
PEERS = ("course", "torch", "none")
COLUMNS = (
    "device", "dtype", "batch", "deepnet", "gram", "course", "torch", "/course", "/torch",
)  # fmt: skip


@dataclass
class Row:
    """One line of the table: seconds per step for each implementation (None: not run)."""

    device: str
    dtype: str
    batch: int
    deepnet: float
    gram: float | None
    course: float | None
    torch: float | None
    torch_note: str = ""

    def ratio(self, peer: str) -> float | None:
        """deepnet's step time over the peer's (below 1: deepnet is faster)."""
        other = getattr(self, peer)
        return None if other is None else self.deepnet / other


def time_call(
    fn: Callable[[], Any], *, warmup: int, repeats: int, sync: Callable[[], None] | None = None
) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, after warming up.

    Warm-up is ``warmup`` calls, and (when ``warmup`` > 0) for at least WARMUP_S seconds:
    thread pools start, and PyTorch's first calls pick their kernels.
    """

    def call() -> None:
        fn()
        if sync is not None:
            sync()

    began, done = time.perf_counter(), 0
    while done < warmup or (warmup and time.perf_counter() - began < WARMUP_S):
        call()
        done += 1
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synthetic_data(n_x: int, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pictures-like float64 data: X (n_x, m) column-major in [0, 1], Y (1, m) of 0/1."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(m, n_x)).T / 255.0
    return X, (rng.random((1, m)) < 0.35).astype(np.float64)


def measure_row(
    layers: Sequence[int],
    device: str,
    dtype: str,
    m: int,
    *,
    warmup: int,
    repeats: int,
    peers: Sequence[str],
) -> Row:
    """Time every implementation for one (device, dtype, batch)."""
    host_params = draw_parameters(layers, "lecun", seed=1)
    X_host, Y_host = synthetic_data(layers[0], m)
    X, Y = to_device(X_host, device, dtype), to_device(Y_host, device, dtype)
    params = like(host_params, X)
    sync = (lambda: synchronize("cuda")) if device == "cuda" else None
    kw = dict(warmup=warmup, repeats=repeats, sync=sync)
    deepnet_s = time_call(lambda: train_step(params, X, Y, LEARNING_RATE), **kw)

    gram = GramSteps(params, X, Y, LEARNING_RATE)  # one iteration of a run, as fit runs it
    gram_s = time_call(lambda: gram.run(0), **kw)
    course_s = None
    if "course" in peers and device == "cpu" and dtype == "float64":
        course_s = time_call(
            lambda: course_step(host_params, X_host, Y_host, LEARNING_RATE),
            warmup=warmup,
            repeats=repeats,
        )
    torch_s, note = None, ""
    if "torch" in peers:
        if not torch_available():
            note = "not-installed"
        elif device == "cuda" and not torch_cuda_available():
            note = "no-cuda-build"
        else:
            step = TorchStep(host_params, X_host, Y_host, LEARNING_RATE, device=device, dtype=dtype)
            torch_s = time_call(step, warmup=warmup, repeats=repeats, sync=step.synchronize)
    return Row(device, dtype, m, deepnet_s, gram_s, course_s, torch_s, note)


def format_table(rows: Sequence[Row], layers: Sequence[int]) -> str:
    """The rows as a fixed-width text table, with a heading and a key."""

    def rate(seconds: float | None, m: int, note: str = "") -> str:
        if seconds is None:
            return note or "-"
        return f"{m / seconds:,.0f}"

    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    lines = [[*COLUMNS]]
    for r in rows:
        lines.append([
            r.device, r.dtype, str(r.batch), rate(r.deepnet, r.batch), rate(r.gram, r.batch),
            rate(r.course, r.batch), rate(r.torch, r.batch, r.torch_note),
            ratio(r.ratio("course")), ratio(r.ratio("torch")),
        ])  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    text = []
    for line in lines:
        cells = zip(line, widths, strict=True)
        text.append(
            "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(cells))
        )
    head = f"deepnet bench: one training step of {tuple(layers)}, examples/s (higher is faster)"
    key = [
        "deepnet: train_step; gram: one iteration of the full-batch Gram path (fit's default;",
        "its one-off X.T @ X not included); course: the course's NumPy code (float64 only);",
        "/course, /torch: deepnet's step time over the peer's (below 1x: deepnet is faster)",
    ]
    return "\n".join([head, *text, *key])


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _choice_list(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(
                f"choose from {', '.join(allowed)} (comma-separated), got {text!r}"
            )
        return values

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``deepnet bench``."""
    parser = argparse.ArgumentParser(
        prog="deepnet bench",
        description="Time deepnet's training step against the course's code and PyTorch.",
    )
    add = parser.add_argument
    add("--layers", type=_int_list, default=[12288, 20, 7, 5, 1], help="default: 12288,20,7,5,1")
    add("--sizes", type=_int_list, default=[209, 1024], help="batch sizes (default: 209,1024)")
    add("--dtypes", type=_choice_list(DTYPES), default=list(DTYPES), help="default: both")
    add("--devices", type=_choice_list(DEVICES), help="default: cpu, and cuda if usable")
    add("--peers", type=_choice_list(PEERS), default=["course", "torch"], help="default: both")
    add("--repeats", type=int, default=5, help="timed calls per cell, median taken (default 5)")
    add("--warmup", type=int, default=2, help="untimed calls before them (default 2)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        layers = check_layer_dims(args.layers)
    except ValueError as exc:
        parser.error(str(exc))
    if args.repeats < 1 or args.warmup < 0 or any(m < 1 for m in args.sizes) or not args.sizes:
        parser.error("--repeats must be >= 1, --warmup >= 0 and every size >= 1")
    devices = args.devices or (["cpu", "cuda"] if cuda_available() else ["cpu"])
    if "cuda" in devices and not cuda_available():
        parser.error(f"--devices cuda: no usable CUDA GPU (needs CuPy: {install_hint('cuda12')})")
    with threads.blas_threads() as chosen:  # the policy of a training run (deepnet.threads)
        blas = threads.describe(threads.blas_info(chosen))
        rows = [
            measure_row(
                layers,
                device,
                dtype,
                m,
                warmup=args.warmup,
                repeats=args.repeats,
                peers=args.peers,
            )  # fmt: skip
            for device in devices
            for dtype in args.dtypes
            for m in args.sizes
        ]
    print(format_table(rows, layers))
    print(blas)
    return 0
