"""``deepnet info``, ``bench`` and ``make-data``: the installation, benchmarks, big files."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from deepnet import __version__, backend
from deepnet.cli.common import device_line, error, version
from deepnet.data import data_dir
from deepnet.errors import DeepnetError, InputError
from deepnet.install import install_hint
from deepnet.paths import check_outputs, safe_text


def info_command(args: argparse.Namespace) -> int:
    """``deepnet info``: versions, BLAS and its threads, MPI, the extras installed, the
    resolved device, the GPU, where the data come from and where the synthetic set is."""
    print(f"deepnet {__version__}")
    print(f"python {platform.python_version()} ({platform.system()} {platform.machine()})")
    libraries = ["numpy", "h5py", "pillow", "matplotlib", "tqdm", "threadpoolctl",
                 "array-api-compat"]  # fmt: skip
    print("libraries: " + ", ".join(f"{n} {version(n) or 'missing'}" for n in libraries))
    cupy = [f"{n} {v}" for n in ("cupy-cuda12x", "cupy-cuda13x", "cupy") if (v := version(n))]
    print(f"cupy: {', '.join(cupy) or 'not installed'}")
    print(f"gpu: {backend.gpu_description() or 'none usable'}")
    print(blas_line())
    print(mpi_line())
    print(extras_line())
    root = data_dir()
    if root is None:
        print("data: DEEPNET_DATA is not set; `deepnet train` uses the synthetic set")
    else:
        print(f"data: {root} (DEEPNET_DATA)")
    print(synthetic_line())
    try:
        device = backend.cli_device(args.backend, args.device)
    except DeepnetError as exc:
        print("device: unusable")
        error(str(exc))
        return 1
    print(f"device: {device_line(device)}")
    return 0


DISTRIBUTION = "deepnet-course"


def blas_line() -> str:
    """NumPy's BLAS library, its version and how many threads it uses (threadpoolctl)."""
    try:
        from deepnet.threads import describe

        return describe()
    except Exception as exc:  # an unknown BLAS must not stop `deepnet info`
        return f"BLAS: unknown ({type(exc).__name__}: {exc})"


def mpi_launcher() -> str | None:
    """The MPI launcher ``mpiexec -n N deepnet train --distributed`` would use, or None:
    the one beside this Python (installed with the mpi extra), else the first on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.is_file() and os.access(here, os.X_OK) else shutil.which("mpiexec")


def mpi_line() -> str:
    """Whether mpi4py and an MPI launcher are there, for ``deepnet train --distributed``."""
    mpi4py = version("mpi4py") or (
        "installed" if importlib.util.find_spec("mpi4py") is not None else None
    )
    launcher = mpi_launcher()
    line = (f"mpi: mpi4py {mpi4py or 'not installed'}; launcher: "
            f"{launcher or 'no mpiexec beside python or on PATH'}")  # fmt: skip
    if mpi4py is None or launcher is None:
        line += f" (--distributed needs both: {install_hint('mpi')})"
    return line


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;(]", requirement.strip(), maxsplit=1)[0]


def declared_extras() -> dict[str, list[str]] | None:
    """Each extra of the distribution with the distributions it needs: from the installed
    metadata, else (running from a checkout's src) from the checkout's pyproject.toml."""
    try:
        requires = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        requires = None
    extras: dict[str, list[str]] = {}
    if requires is not None:
        for requirement in requires:
            marker = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
            if marker:
                extras.setdefault(marker[1], []).append(_requirement_name(requirement))
        return extras
    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    try:
        import tomllib

        table = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        if table["project"]["name"] != DISTRIBUTION:
            return None
        declared = table["project"].get("optional-dependencies", {})
    except (ImportError, OSError, KeyError, ValueError):
        return None
    return {name: [_requirement_name(r) for r in reqs] for name, reqs in declared.items()}


def extras_line() -> str:
    """Which of the distribution's extras are installed (every distribution they need is)."""
    extras = declared_extras()
    if extras is None:
        return f"extras: unknown ({DISTRIBUTION}'s metadata not found)"
    have = [name for name, needs in extras.items() if all(version(n) for n in needs)]
    missing = [name for name in extras if name not in have]
    return (f"extras: {', '.join(have) or 'none'} installed; not installed: "
            f"{', '.join(missing) or 'none'}")  # fmt: skip


def synthetic_line() -> str:
    """Where the synthetic set is cached and whether it is there yet."""
    from deepnet.synthetic import FILES, cache_dir

    root = cache_dir()
    there = all((root / name).is_file() for name in FILES.values())
    state = "present" if there else "not generated yet (the first run that needs it writes it)"
    return f"synthetic data: {root} ({state})"


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

    shown = safe_text(args.path)
    if not args.path.strip():
        raise InputError("make-data PATH is empty; give a new file name, e.g. data/big.h5")
    if args.path.endswith(("/", os.sep)) or os.path.isdir(args.path):
        folder = safe_text(args.path.rstrip("/" + os.sep) or args.path)
        raise InputError(f"{shown} is a folder; give a new file inside it, e.g. {folder}/big.h5")
    if os.path.lexists(args.path):  # write only new paths: never over a user's file
        raise InputError(f"{shown} exists; give make-data a new path (or delete it)")
    check_outputs({"make-data PATH": (args.path, "model")})  # its folder: a folder, writable
    info = make_synthetic(args.path, args.n, seed=args.seed, prefix=args.prefix)
    print(json.dumps({"path": str(info.path), "m": info.m, "bytes": info.path.stat().st_size}))
    return 0
