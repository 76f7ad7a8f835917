"""The gradient reductions of deepnet.allreduce: NCCL, CUDA-aware MPI and through the host.

The choice and the start-up of NCCL run here on the CPU: ranks are threads, MPI and CuPy's
NCCL are test doubles that behave as collectives (nobody returns until every rank came, and
a rank that never comes leaves the others waiting). One agreement also runs over real MPI
ranks. The reductions themselves on a GPU are the cuda-marked tests at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

from cli_process import mpiexec
from deepnet import allreduce
from deepnet.allreduce import Allreduce, _mpi_accepts_cuda, agree
from deepnet.backend import cuda_available
from deepnet.distributed import DistributedError

WAIT_S = 10  # no test double waits longer than this for the other ranks


class World:
    """What the ranks share: exchange slots, the non-blocking rounds, the abort flag."""

    def __init__(self, size: int):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=WAIT_S)
        self.slots: list = [None] * size
        self.rounds: dict[int, dict[int, int]] = {}
        self.lock = threading.Lock()
        self.aborted = threading.Event()


class Request:
    def __init__(self, world: World, key: int, flags: np.ndarray):
        self.world, self.key, self.flags = world, key, flags

    def Test(self) -> bool:  # mpi4py's name
        with self.world.lock:
            got = dict(self.world.rounds[self.key])
        if len(got) < self.world.size:
            return False
        self.flags[:] = [got[r] for r in range(self.world.size)]
        return True


class FakeComm:
    """The mpi4py calls deepnet.allreduce makes, between threads."""

    def __init__(self, world: World, rank: int, info: str = ""):
        self.world, self.rank, self.info = world, rank, info
        self.calls = 0

    def Get_size(self) -> int:
        return self.world.size

    def Get_rank(self) -> int:
        return self.rank

    def Get_info(self):
        return {"mpi_memory_alloc_kinds": self.info}

    def allgather(self, value):
        w = self.world
        w.slots[self.rank] = value
        w.barrier.wait()
        out = list(w.slots)
        w.barrier.wait()
        return out

    def bcast(self, value, root: int = 0):
        return self.allgather(value)[root]

    def Allreduce(self, _in_place, buf, op=None):
        buf[...] = sum(self.allgather(np.array(buf)))

    def Iallgather(self, mine: np.ndarray, flags: np.ndarray) -> Request:
        self.calls += 1
        with self.world.lock:
            self.world.rounds.setdefault(self.calls, {})[self.rank] = int(mine[0])
        return Request(self.world, self.calls, flags)

    def Abort(self, code: int) -> None:
        self.world.aborted.set()


FAKE_MPI = types.SimpleNamespace(
    IN_PLACE=object(), SUM="sum", COMM_TYPE_SHARED=0, Get_processor_name=lambda: "node"
)
_rank = threading.local()


class FakeCommunicator:
    """CuPy's NcclCommunicator: its constructor is a collective that may fail on one rank."""

    def __init__(self, nccl: FakeNccl, size: int, uid, rank: int):
        if rank in nccl.fail_at_once:  # fails before reaching the others: they wait
            raise RuntimeError("NCCL error: unhandled system error")
        nccl.entered.append(rank)
        deadline = time.monotonic() + WAIT_S
        while len(nccl.entered) < size:  # waits for every rank, as ncclCommInitRank does
            if nccl.world.aborted.is_set():
                raise SystemExit("killed by MPI_Abort")
            if time.monotonic() > deadline:
                raise AssertionError("a rank was left hanging in NCCL's init")
            time.sleep(0.001)
        if rank in nccl.fail_after:
            raise RuntimeError("NCCL error: remote process exited")
        self.nccl, self.aborted, self.reduced = nccl, False, []

    def abort(self) -> None:
        self.aborted = True

    def check_async_error(self) -> None:
        if self.nccl.async_error:
            raise RuntimeError("NCCL error: remote process exited or there was a network error")

    def allReduce(self, send, recv, count, kind, op, stream):  # CuPy's name
        self.reduced.append((send, recv, count, kind, op, stream))


class FakeNccl(types.ModuleType):
    NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 7, 8, 0

    def __init__(self, world: World):
        super().__init__("fakecupy.cuda.nccl")
        self.world, self.available = world, True
        self.entered: list[int] = []
        self.fail_at_once: set[int] = set()
        self.fail_after: set[int] = set()
        self.missing_on: set[int] = set()
        self.async_error = False

    def get_unique_id(self):
        return (1, 2, 3)

    def NcclCommunicator(self, size, uid, rank):  # CuPy's name
        return FakeCommunicator(self, size, uid, rank)


def fake_cupy(nccl: FakeNccl, shared_gpu: bool = False) -> types.ModuleType:
    cupy = types.ModuleType("fakecupy")
    cuda = types.ModuleType("fakecupy.cuda")
    cupy.cuda, cuda.nccl, cupy.float64 = cuda, nccl, np.float64

    def device():
        if _rank.value in nccl.missing_on:
            raise RuntimeError("CUDA driver version is insufficient")
        return types.SimpleNamespace(id=0 if shared_gpu else _rank.value)

    cuda.Device = device
    cuda.runtime = types.SimpleNamespace(
        getDeviceProperties=lambda i: {"pciDomainID": 0, "pciBusID": i, "pciDeviceID": 0}
    )
    cuda.get_current_stream = lambda: types.SimpleNamespace(ptr=42)
    cupy.asnumpy, cupy.asarray = np.array, np.asarray
    return cupy


@pytest.fixture
def world2(monkeypatch):
    """Two thread-ranks with doubles for MPI, CuPy and its NCCL."""
    world = World(2)
    nccl = FakeNccl(world)
    cupy = fake_cupy(nccl)
    monkeypatch.setitem(sys.modules, "fakecupy", cupy)
    monkeypatch.setitem(sys.modules, "fakecupy.cuda", cupy.cuda)
    monkeypatch.setitem(sys.modules, "fakecupy.cuda.nccl", nccl)
    monkeypatch.setattr(allreduce, "_mpi", lambda: FAKE_MPI)
    monkeypatch.setattr(allreduce, "cupy_module", lambda: sys.modules["fakecupy"])
    monkeypatch.setattr(allreduce, "_on_gpu", lambda a: True)
    monkeypatch.setattr(allreduce, "_mpix_query_cuda_support", lambda: None)
    monkeypatch.setenv(allreduce.INIT_TIMEOUT_ENV, "1")
    return world, nccl


def run_ranks(world: World, body) -> list:
    """``body(comm)`` on every thread-rank: [(\"ok\", value) or (\"error\", exception)]."""
    results: list = [None] * world.size

    def target(rank: int) -> None:
        _rank.value = rank
        try:
            results[rank] = ("ok", body(FakeComm(world, rank)))
        except BaseException as exc:  # SystemExit too: an MPI_Abort in the double
            results[rank] = ("error", exc)

    threads = [threading.Thread(target=target, args=(r,), daemon=True) for r in range(world.size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(3 * WAIT_S)
    assert not any(t.is_alive() for t in threads), "a rank hung"
    return results


def methods(results) -> list:
    return [value.method if kind == "ok" else repr(value) for kind, value in results]


def test_nccl_starts_when_every_rank_can(world2):
    world, nccl = world2
    results = run_ranks(world, lambda comm: Allreduce(comm, np.zeros(3), "auto"))
    assert methods(results) == ["nccl", "nccl"]
    assert sorted(nccl.entered) == [0, 1]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("where", ["missing_on", "shared_gpu"])
def test_auto_falls_back_before_anyone_enters_nccl_init(world2, monkeypatch, where):
    world, nccl = world2
    if where == "missing_on":
        nccl.missing_on.add(1)  # rank 1 alone can't use its GPU through NCCL
    else:
        cupy = fake_cupy(nccl, shared_gpu=True)
        monkeypatch.setattr(allreduce, "cupy_module", lambda: cupy)
    results = run_ranks(world, lambda comm: Allreduce(comm, np.zeros(3), "auto"))
    assert methods(results) == ["mpi-host", "mpi-host"]
    assert nccl.entered == []  # agreed before the collective init: nobody waits in it
    assert results[0][1].fallback == results[1][1].fallback is not None


def test_reduce_nccl_fails_alike_on_every_rank(world2):
    world, nccl = world2
    nccl.missing_on.add(0)
    results = run_ranks(world, lambda comm: Allreduce(comm, np.zeros(3), "nccl"))
    for kind, exc in results:
        assert kind == "error" and isinstance(exc, DistributedError)
        assert "rank 0" in str(exc) and "nccl" in str(exc).lower()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_auto_falls_back_when_init_fails_on_one_rank_and_aborts_the_others(world2):
    world, nccl = world2
    nccl.fail_after.add(1)  # rank 0 gets a communicator, rank 1 an error
    results = run_ranks(world, lambda comm: Allreduce(comm, np.zeros(3), "auto"))
    assert methods(results) == ["mpi-host", "mpi-host"]
    assert "failed on rank 1" in results[0][1].fallback
    assert results[0][1]._nccl is None


def test_mpi_cuda_when_every_rank_reports_cuda_memory(world2, monkeypatch):
    world, nccl = world2
    nccl.available = False

    def body(comm):
        comm.info = "mpi,system,cuda:device"
        return Allreduce(comm, np.zeros(3), "auto")

    assert methods(run_ranks(world, body)) == ["mpi-cuda", "mpi-cuda"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_rank_failing_inside_init_does_not_leave_the_others_hanging(world2):
    """Rank 1 fails before joining the init that rank 0 waits in: the job is aborted."""
    world, nccl = world2
    nccl.fail_at_once.add(1)
    results = run_ranks(world, lambda comm: Allreduce(comm, np.zeros(3), "nccl"))
    assert world.aborted.is_set()  # rank 1 gave up waiting for rank 0 and called MPI_Abort
    assert results[0][0] == "error" and isinstance(results[0][1], SystemExit)


def test_asynchronous_nccl_errors_abort_the_communicator(world2):
    world, nccl = world2
    buf = types.SimpleNamespace(
        size=4, dtype=np.dtype(np.float32), data=types.SimpleNamespace(ptr=1000)
    )

    def body(comm):
        reducer = Allreduce(comm, np.zeros(3), "nccl")
        reducer(buf)
        communicator = reducer._nccl
        assert communicator.reduced == [(1000, 1000, 4, nccl.NCCL_FLOAT32, nccl.NCCL_SUM, 42)]
        comm.allgather(None)  # both ranks reduced once
        nccl.async_error = True
        with pytest.raises(DistributedError, match="communicator was aborted"):
            reducer(buf)
        return communicator.aborted and reducer.method == "closed"

    assert run_ranks(world, body) == [("ok", True), ("ok", True)]


def test_mpi_host_reduction_sums_through_the_host(world2):
    world, nccl = world2
    nccl.available = False

    def body(comm):
        reducer = Allreduce(comm, np.zeros(3), "mpi-host")
        return reducer(np.full(3, comm.Get_rank() + 1.0))

    results = run_ranks(world, body)
    for kind, value in results:
        assert kind == "ok"
        np.testing.assert_array_equal(value, [3.0, 3.0, 3.0])


def test_agree_names_the_first_failing_rank(world2):
    world, _ = world2
    results = run_ranks(world, lambda comm: agree(comm, "boom" if comm.rank else None, "x", 5))
    assert results == [("ok", "x failed on rank 1 (1 rank(s) failed): boom")] * 2


# --------------------------------------------------------------------------- CUDA-aware MPI


class InfoComm:
    def __init__(self, kinds):
        self.kinds = kinds

    def Get_info(self):
        if self.kinds is None:
            raise RuntimeError("MPI_Comm_get_info failed")
        return {"mpi_memory_alloc_kinds": self.kinds}


@pytest.mark.parametrize(
    "kinds, query, want",
    [
        ("mpi,system,cuda:device,cuda:managed", None, True),
        ("mpi,system", None, False),
        (None, None, False),
        ("mpi,system", lambda: 1, True),  # Open MPI built with CUDA, no MPI-4.1 key
        ("", lambda: 0, False),
    ],
)
def test_cuda_aware_mpi_detection(monkeypatch, kinds, query, want):
    monkeypatch.setattr(allreduce, "_mpix_query_cuda_support", lambda: query)
    assert _mpi_accepts_cuda(InfoComm(kinds)) is want


def test_mpix_query_cuda_support_is_found_in_a_loaded_libmpi(tmp_path):
    """A stand-in libmpi exporting Open MPI's query, loaded as mpi4py would load the real one."""
    gxx = shutil.which("g++") or shutil.which("gcc")
    if gxx is None:
        pytest.skip("no C compiler here to build a stand-in libmpi")
    src = tmp_path / "mpix.c"
    src.write_text("int MPIX_Query_cuda_support(void) { return 1; }\n")
    lib = tmp_path / "libmpi.so.40"
    subprocess.run([gxx, "-x", "c", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    code = (
        "import ctypes, sys; ctypes.CDLL(sys.argv[1]);"
        "from deepnet.allreduce import _mpix_query_cuda_support as q; print(q()())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(lib)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_no_libmpi_means_no_query():
    code = "from deepnet.allreduce import _mpix_query_cuda_support as q; print(q() is None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr


# --------------------------------------------------------------------------- real MPI ranks


def _mpi_run(n: int, script: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "ranks.py"
    path.write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [mpiexec(), "-n", str(n), sys.executable, str(path), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


AGREE_SCRIPT = """
from mpi4py import MPI
from deepnet.allreduce import agree
comm = MPI.COMM_WORLD
said = agree(comm, "boom" if comm.Get_rank() == 1 else None, "init", 60)
print(f"{comm.Get_rank()} {said}", flush=True)
"""


def test_agree_over_real_mpi_ranks(tmp_path):
    out = _mpi_run(2, AGREE_SCRIPT, tmp_path)
    assert out.returncode == 0, out.stderr
    # The ranks share one stdout, so their lines can interleave: look for each one's line.
    said = re.findall(r"([01]) init failed on rank 1 \(1 rank\(s\) failed\): boom", out.stdout)
    assert sorted(said) == ["0", "1"], out.stdout


REDUCE_SCRIPT = """
import sys
import cupy
from mpi4py import MPI
from deepnet.allreduce import Allreduce, bind_gpu
comm = MPI.COMM_WORLD
bind_gpu(comm)
method = sys.argv[1]
for dtype in (cupy.float32, cupy.float64):
    buf = cupy.arange(1000, dtype=dtype) * (comm.Get_rank() + 1)
    reducer = Allreduce(comm, buf, method)
    assert reducer.method == method, (reducer.method, reducer.fallback)
    got = cupy.asnumpy(reducer(buf))
    want = cupy.asnumpy(cupy.arange(1000, dtype=dtype)) * sum(range(1, comm.Get_size() + 1))
    assert (got == want).all(), (method, dtype)
    reducer.close()
print(f"ok {comm.Get_rank()} {method}", flush=True)
"""


@pytest.mark.cuda
@pytest.mark.parametrize("method", ["nccl", "mpi-cuda", "mpi-host"])
def test_reductions_on_gpus(tmp_path, method):
    if not cuda_available():
        pytest.skip("cuda reductions: need CuPy and a usable CUDA GPU (none here)")
    from deepnet.backend import cupy_module

    gpus = cupy_module().cuda.runtime.getDeviceCount()
    ranks = 2 if method != "nccl" or gpus >= 2 else 1  # NCCL needs one GPU per rank
    if method == "mpi-cuda":
        probe = _mpi_run(
            1,
            "from mpi4py import MPI\nfrom deepnet.allreduce import _mpi_accepts_cuda\n"
            "print(_mpi_accepts_cuda(MPI.COMM_WORLD))\n",
            tmp_path,
        )
        if probe.stdout.strip() != "True":
            pytest.skip("this MPI does not report CUDA support: mpi-cuda not tested")
    out = _mpi_run(ranks, REDUCE_SCRIPT, tmp_path, method)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("ok") == ranks
