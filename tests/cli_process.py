"""Running ``deepnet`` as a real process in tests: to completion, or until its first
checkpoint and then SIGINT; and finding ``mpiexec`` for the tests that start real MPI ranks.
One BLAS thread per process, every wait bounded."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(cmd: list[str], cwd: Path, env: dict[str, str] = ENV) -> subprocess.CompletedProcess:
    """Run ``cmd`` to the end (at most 240 s); it must exit 0."""
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, f"{cmd}\n{out.stdout}\n{out.stderr}"
    return out


def interrupt(
    cmd: list[str], checkpoint: Path, cwd: Path, env: dict[str, str] = ENV
) -> tuple[int, str]:
    """Start ``cmd``, SIGINT it once ``checkpoint`` exists; its exit status and stderr."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not checkpoint.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no checkpoint appeared: {proc.communicate()}")
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the run did not stop after SIGINT")
    return proc.returncode, err


def mpiexec() -> str:
    """The ``mpiexec`` that launches this Python's mpi4py ranks; skips the test without one."""
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed: pip install -e '.[test]' (or '.[mpi]')")
    here = Path(sys.executable).parent / "mpiexec"  # the PyPI mpich wheel puts it here
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec found: pip install mpich (or put your MPI's mpiexec on PATH)")
    return found
