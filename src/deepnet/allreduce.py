"""Summing a flat gradient buffer over MPI ranks, on the device where it lives.

On the CPU it is ``MPI_Allreduce`` on NumPy memory. On CUDA: NCCL through CuPy when every
rank has its own GPU and NCCL is installed, else CUDA-aware MPI when the MPI library says it
accepts CUDA memory, else through the host (one copy each way per step). Every choice is
agreed by all ranks, and a failure on one rank is raised on all of them: no rank is left
waiting in a collective that another will never join.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import sys
import time
import warnings
from typing import Any

import array_api_compat
import numpy as np

from deepnet.backend import cupy_module
from deepnet.errors import InputError

Array = Any
REDUCE_METHODS = ("auto", "mpi", "nccl", "mpi-cuda", "mpi-host")
INIT_TIMEOUT_ENV = "DEEPNET_NCCL_INIT_TIMEOUT"  # seconds every rank waits for the others' init
_NCCL_HINT = (
    "pip install nvidia-nccl-cu12, or python -m cupyx.tools.install_library --library nccl; "
    "and one GPU per rank"
)


def _mpi() -> Any:
    from mpi4py import MPI

    return MPI


def _on_gpu(a: Array) -> bool:
    return array_api_compat.is_cupy_array(a)


def _error(message: str) -> Exception:
    from deepnet.distributed import DistributedError  # imported late: it imports this module

    return DistributedError(message)


class Allreduce:
    """Sums a flat float buffer over the ranks, on the device it lives on.

    ``method``: ``"mpi"`` (host arrays), and for CUDA arrays ``"nccl"``, ``"mpi-cuda"``
    (CUDA-aware MPI) or ``"mpi-host"`` (through host memory); ``"auto"`` picks the first
    that works here, falling back from NCCL to MPI when NCCL can't start, and all ranks agree
    on the choice. Construct it on every rank: it raises alike on all of them, so it needs no
    error agreement around it (and must not be wrapped in one that runs collectives).
    ``fallback`` says why ``"auto"`` did not get NCCL (None when it did or was not tried).
    """

    def __init__(self, comm: Any, like: Array, method: str = "auto") -> None:
        if method not in REDUCE_METHODS:
            raise InputError(f"reduce must be one of {', '.join(REDUCE_METHODS)}, got {method!r}")
        self.comm = comm
        self.size = 1 if comm is None else comm.Get_size()
        self.fallback: str | None = None
        self._nccl: Any = None
        self._check_async = False
        self._cuda = _on_gpu(like)
        if not self._cuda and not array_api_compat.is_numpy_array(like):
            raise InputError(
                "distributed training runs on NumPy (device 'cpu') or CuPy (device 'cuda') "
                f"arrays, not {type(like).__module__}"
            )
        if comm is None:
            self.method = "none"
        elif not self._cuda:
            if method not in ("auto", "mpi"):
                raise InputError(f"reduce={method!r} is for CUDA arrays; on the CPU use 'mpi'")
            self.method = "mpi"
        else:
            self.method = self._cuda_method(method)
        self.calls = 0
        self.bytes = 0  # payload handed to the reduction so far (per rank)

    def _cuda_method(self, method: str) -> str:
        comm = self.comm
        if method in ("auto", "nccl"):
            reason = self._start_nccl()
            if reason is None:
                return "nccl"
            if method == "nccl":
                raise _error(f"reduce='nccl' could not start: {reason}")
            self.fallback = reason
        if method in ("auto", "mpi-cuda"):
            aware = all(comm.allgather(_mpi_accepts_cuda(comm)))
            if aware or method == "mpi-cuda":  # asked for explicitly: the user knows their MPI
                return "mpi-cuda"
        return "mpi-host"

    def _start_nccl(self) -> str | None:
        """Start an NCCL communicator on every rank: None, or why not (the same on all)."""
        comm = self.comm
        # 1. Local checks only, then one agreement: nobody enters NCCL's init unless all will.
        nccl, gpu, problem = None, None, None
        try:
            cupy = cupy_module()
            nccl = importlib.import_module(f"{cupy.__name__}.cuda.nccl")
            if not getattr(nccl, "available", False):
                problem = "CuPy finds no NCCL library"
            gpu = _physical_gpu(cupy)
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
        facts = comm.allgather((problem, gpu))
        bad = [(rank, p) for rank, (p, _) in enumerate(facts) if p is not None]
        if bad:
            return f"rank {bad[0][0]}: {bad[0][1]} ({_NCCL_HINT})"
        gpus = [g for _, g in facts]
        if len(set(gpus)) != len(gpus):
            return "two ranks share one GPU, which NCCL refuses (run one rank per GPU)"
        # 2. Rank 0 makes the id; every rank learns it, or why there is none.
        uid: Any = None
        if comm.Get_rank() == 0:
            try:
                uid = nccl.get_unique_id()
            except Exception as exc:
                uid = f"{type(exc).__name__}: {exc}"
        uid = comm.bcast(uid, root=0)
        if isinstance(uid, str):
            return f"rank 0 could not create an NCCL id ({uid})"
        # 3. The collective init, then an agreement on its outcome within a time limit.
        communicator, problem = None, None
        try:
            communicator = nccl.NcclCommunicator(comm.Get_size(), uid, comm.Get_rank())
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
        failed = agree(comm, problem, "NCCL initialisation", _init_timeout())
        if failed is not None:
            if communicator is not None:
                _abort(communicator)
            warnings.warn(f"deepnet: {failed}; not using NCCL", RuntimeWarning, stacklevel=4)
            return failed
        self._nccl, self._nccl_module = communicator, nccl
        self._check_async = _async_checks_work(communicator)
        return None

    def __call__(self, buf: Array) -> Array:
        """The element-wise sum of ``buf`` over all ranks (``buf`` may be overwritten)."""
        self.calls += 1
        self.bytes += buf.size * buf.dtype.itemsize
        if self.method == "none":
            return buf
        MPI = _mpi()
        if self.method == "mpi":
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            return buf
        cupy = cupy_module()
        stream = cupy.cuda.get_current_stream()
        if self.method == "nccl":  # queued on the stream, like any kernel: no host wait
            self._raise_async_error()
            nccl = self._nccl_module
            kind = nccl.NCCL_FLOAT64 if buf.dtype == cupy.float64 else nccl.NCCL_FLOAT32
            ptr = buf.data.ptr
            self._nccl.allReduce(ptr, ptr, buf.size, kind, nccl.NCCL_SUM, stream.ptr)
            return buf
        if self.method == "mpi-cuda":
            stream.synchronize()  # MPI reads the memory now, not in stream order
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            return buf
        host = cupy.asnumpy(buf)  # mpi-host: waits for the gradients, copies down
        self.comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
        return cupy.asarray(host)

    def _raise_async_error(self) -> None:
        """An earlier NCCL call failed in the background: abort the communicator and say so."""
        if not self._check_async:
            return
        try:
            self._nccl.check_async_error()
        except Exception as exc:
            self.close()
            raise _error(
                f"NCCL failed during the gradient reduction ({type(exc).__name__}: {exc}); "
                "the communicator was aborted. A peer may have died; rerun, or use "
                "--reduce mpi-host"
            ) from exc

    def close(self) -> None:
        """Abort the NCCL communicator, if any (its pending operations return)."""
        communicator, self._nccl = self._nccl, None
        self._check_async = False
        if communicator is not None:
            _abort(communicator)
            self.method = "closed"


def agree(comm: Any, problem: str | None, what: str, timeout_s: float) -> str | None:
    """None when no rank reports a problem; else the first one, on every rank.

    Waits at most ``timeout_s`` for the other ranks (without spinning the CPU hard). A rank
    still missing then is stuck where this one can't reach it (inside a collective that
    another rank never joined), so the whole MPI job is aborted rather than left hanging.
    """
    flags = np.zeros(comm.Get_size(), dtype=np.int32)
    mine = np.array([0 if problem is None else 1], dtype=np.int32)
    request = comm.Iallgather(mine, flags)
    deadline = time.monotonic() + timeout_s
    while not request.Test():
        if time.monotonic() > deadline:
            print(
                f"deepnet: {what} did not finish on every rank within {timeout_s:g} s "
                f"(this rank: {problem or 'ok'}); aborting the MPI job so no rank hangs",
                file=sys.stderr,
                flush=True,
            )
            comm.Abort(1)
            return f"{what} timed out"  # reached only where Abort returns (test doubles)
        time.sleep(0.001)
    if not flags.any():
        return None
    messages = comm.allgather(problem)  # every rank is out of the collective now
    rank = int(np.flatnonzero(flags)[0])
    return f"{what} failed on rank {rank} ({int(flags.sum())} rank(s) failed): {messages[rank]}"


def _init_timeout() -> float:
    try:
        return max(1.0, float(os.environ.get(INIT_TIMEOUT_ENV, "300")))
    except ValueError:
        return 300.0


def _physical_gpu(cupy: Any) -> str:
    """This rank's GPU as host name and PCI address, whatever CUDA_VISIBLE_DEVICES says."""
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    pci = tuple(props.get(k) for k in ("pciDomainID", "pciBusID", "pciDeviceID"))
    return f"{_mpi().Get_processor_name()}:{pci}"


def _async_checks_work(communicator: Any) -> bool:
    """True when CuPy exposes ncclCommGetAsyncError (NCCL >= 2.4) for this communicator."""
    check = getattr(communicator, "check_async_error", None)
    if check is None:
        return False
    try:
        check()
    except RuntimeError as exc:  # "not available in this version"
        return "not available" not in str(exc)
    except Exception:
        return True  # a real error already: the first reduction reports it
    return True


def _abort(communicator: Any) -> None:
    for name in ("abort", "destroy"):
        stop = getattr(communicator, name, None)
        if stop is not None:
            try:
                stop()
                return
            except Exception:
                continue


def _mpi_accepts_cuda(comm: Any) -> bool:
    """True when the MPI library says it accepts CUDA device memory.

    Asks the MPI-4.1 info key ``mpi_memory_alloc_kinds`` (which lists ``cuda``), then Open
    MPI's ``MPIX_Query_cuda_support()``, found in the libmpi already loaded into the process.
    """
    try:
        kinds = comm.Get_info().get("mpi_memory_alloc_kinds") or ""
    except Exception:
        kinds = ""
    if any(kind.split(":")[0].strip() == "cuda" for kind in kinds.split(",")):
        return True
    query = _mpix_query_cuda_support()
    if query is None:
        return False
    try:
        return int(query()) == 1
    except Exception:
        return False


def _mpix_query_cuda_support() -> Any:
    """Open MPI's ``MPIX_Query_cuda_support`` from the loaded libmpi, or None."""
    libraries: list[Any] = []
    with contextlib.suppress(OSError):  # libmpi loaded globally (mpi4py does, for Open MPI)
        libraries.append(ctypes.CDLL(None))
    noload = getattr(os, "RTLD_NOLOAD", 0)
    for path in _loaded_libmpi():
        try:
            libraries.append(ctypes.CDLL(path, mode=noload | os.RTLD_NOW))
        except OSError:
            continue
    for lib in libraries:
        query = getattr(lib, "MPIX_Query_cuda_support", None)
        if query is not None:
            query.argtypes, query.restype = [], ctypes.c_int
            return query
    return None


def _loaded_libmpi() -> list[str]:
    """Paths of the libmpi shared objects mapped into this process (Linux), else []."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libmpi" in line}
    except OSError:
        return []
    return sorted(p for p in paths if os.path.basename(p).startswith("libmpi.so"))


def bind_gpu(comm: Any) -> int:
    """Make this rank use GPU ``local_rank % visible GPUs``; return its id (one rank per GPU).

    Its one collective (splitting off the ranks of this node) comes first, before anything
    that could fail on one rank alone, so an error agreement may wrap it.
    """
    local = comm.Split_type(_mpi().COMM_TYPE_SHARED)
    local_rank = local.Get_rank()
    local.Free()
    cupy = cupy_module()
    device = local_rank % cupy.cuda.runtime.getDeviceCount()
    cupy.cuda.Device(device).use()
    return device
