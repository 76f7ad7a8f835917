"""``deepnet info``, ``bench`` and ``make-data``: the installation, benchmarks, big files."""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Sequence

from deepnet import __version__, backend, threads
from deepnet.cli.common import device_line, error, version
from deepnet.data import data_dir
from deepnet.errors import DeepnetError, InputError


def info_command(args: argparse.Namespace) -> int:
    """``deepnet info``: versions, the resolved device, the GPU, where the data comes from."""
    print(f"deepnet {__version__}")
    print(f"python {platform.python_version()} ({platform.system()} {platform.machine()})")
    libraries = ["numpy", "h5py", "pillow", "tqdm", "array-api-compat"]
    print("libraries: " + ", ".join(f"{n} {version(n) or 'missing'}" for n in libraries))
    cupy = [f"{n} {v}" for n in ("cupy-cuda12x", "cupy-cuda13x", "cupy") if (v := version(n))]
    print(f"cupy: {', '.join(cupy) or 'not installed'}")
    print(f"gpu: {backend.gpu_description() or 'none usable'}")
    print(threads.describe())  # the BLAS, its threads now, and deepnet's thread policy
    root = data_dir()
    if root is None:
        print("data: DEEPNET_DATA is not set; `deepnet train` uses the synthetic set")
    else:
        print(f"data: {root} (DEEPNET_DATA)")
    try:
        device = backend.resolve_device(args.device)
    except DeepnetError as exc:
        print("device: unusable")
        error(str(exc))
        return 1
    print(f"device: {device_line(device)}")
    return 0


def bench_command(argv: Sequence[str]) -> int:
    """``deepnet bench ...``: hand the arguments to :mod:`deepnet.bench`."""
    try:
        from deepnet.bench import main as bench_main
    except ModuleNotFoundError as exc:
        if exc.name != "deepnet.bench":
            raise
        error("`deepnet bench` is not available in this installation (no deepnet.bench)")
        return 1
    return bench_main(list(argv))


# ---------------------------------------------------------------------------------------------
# the parser and main


def make_data_command(args: argparse.Namespace) -> int:
    """``deepnet make-data PATH --n N``: a large synthetic file in the course's layout."""
    from deepnet.streaming import make_synthetic

    if os.path.lexists(args.path):  # write only new paths: never over a user's file
        raise InputError(f"{args.path} exists; give make-data a new path (or delete it)")
    info = make_synthetic(args.path, args.n, seed=args.seed, prefix=args.prefix)
    print(json.dumps({"path": str(info.path), "m": info.m, "bytes": info.path.stat().st_size}))
    return 0
