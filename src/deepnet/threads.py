"""How many BLAS threads a training run uses: never more threads than free cores.

The policy (:func:`plan`), evaluated once when a run starts:

1. A user's own setting wins: if any of ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
   ``MKL_NUM_THREADS``, ``BLIS_NUM_THREADS``, ``VECLIB_MAXIMUM_THREADS`` or
   ``DEEPNET_BLAS_THREADS`` is set, deepnet leaves the BLAS alone (``DEEPNET_BLAS_THREADS``,
   being deepnet's own, is applied as given).
2. Usable cores: ``os.sched_getaffinity`` (what this process may run on), capped by a
   cgroup CPU quota (``/sys/fs/cgroup/cpu.max``, as ``docker --cpus`` sets).
3. MPI: each of the N ranks on this node (from the launcher's environment:
   ``MPI_LOCALNRANKS``, ``OMPI_COMM_WORLD_LOCAL_SIZE``, ``PMI_LOCAL_SIZE``, ...) gets
   ``cores // N`` of them, at least one.
4. A consumer thread of this process (the streaming read-ahead) takes one core of that share.
5. Other processes: the tasks runnable right now on the machine (``/proc/loadavg``'s 4th
   field, less this process's own running threads and the other local ranks; the least of
   three readings, so that a short-lived task is not counted) are cores already taken;
   they come off the node's total before it is shared out. The 1-minute load average is
   not used to decide: it lags a minute behind and counts this process's own past threads.

The result is at least one thread. It is recorded in the run's resume state
(:data:`RESUME_KEY`) and a resumed run takes it again: OpenBLAS's float64 products differ in
their last bits between thread counts, and ``--resume`` must continue bit for bit.

Why fewer threads rather than more: a BLAS product
split over two threads waits for the slower one, and a thread that shares its core with
another process waits for the scheduler's tick (4 ms); one thread per free core keeps the
product's time close to its single-thread time when the machine is busy
(docs/benchmarks.md, "Threads").
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deepnet.errors import InputError

#: Settings a user makes for the BLAS or OpenMP threads; any one of them turns the policy off.
USER_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
#: deepnet's own override: a positive integer, applied as given.
OWN_VAR = "DEEPNET_BLAS_THREADS"
#: How MPI launchers tell a process how many ranks share its node (first one set wins).
LOCAL_SIZE_VARS = (
    "MPI_LOCALNRANKS",  # MPICH's Hydra
    "OMPI_COMM_WORLD_LOCAL_SIZE",  # Open MPI
    "PMI_LOCAL_SIZE",  # PMI-2 launchers
    "MPI_LOCAL_NRANKS",  # Intel MPI
    "MV2_COMM_WORLD_LOCAL_SIZE",  # MVAPICH2
    "PALS_LOCAL_SIZE",  # HPE Cray PALS
    "SLURM_NTASKS_PER_NODE",  # srun
)


@dataclass(frozen=True)
class ThreadPlan:
    """The decision and what it was made from (reported by ``blas_info``)."""

    threads: int | None  # None: left to the BLAS (the user set its threads)
    reason: str
    cores: int = 0  # usable cores of this process
    ranks: int = 1  # ranks sharing this node
    readers: int = 0  # consumer threads of this process besides the BLAS
    others: int = 0  # cores other processes keep busy (estimate)


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_quota()
    return max(1, min(cores, quota) if quota else cores)


def cgroup_quota(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """Whole cores allowed by a cgroup v2 CPU quota ("200000 100000" -> 2), or None."""
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def local_ranks(env: Mapping[str, str] | None = None) -> int:
    """Ranks on this node according to the MPI launcher's variables (1 when not under MPI)."""
    env = os.environ if env is None else env
    for name in LOCAL_SIZE_VARS:
        value = env.get(name, "").split("(")[0].split(",")[0].strip()  # SLURM: "2(x3)"
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def runnable_tasks(path: Path = Path("/proc/loadavg")) -> int | None:
    """Tasks runnable on the machine right now (``/proc/loadavg``'s 4th field), or None."""
    try:
        return int(path.read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def own_running_threads(task_dir: Path = Path("/proc/self/task")) -> int:
    """This process's threads that are running or runnable now (at least 1: the caller)."""
    running = 0
    try:
        for task in task_dir.iterdir():
            with contextlib.suppress(OSError, IndexError):
                # The state follows the command name in parentheses: "pid (comm) R ...".
                if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R":
                    running += 1
    except OSError:
        pass
    return max(1, running)


def other_load(ranks: int = 1, cores: int | None = None, readings: int = 3) -> int:
    """Cores other processes keep busy now: runnable tasks not ours nor our sibling ranks'.

    The least of ``readings`` paired readings (machine, then this process's own threads),
    so that a short-lived task, or our own BLAS threads spinning down after a product, are
    not counted. When the machine has more CPUs than this process may use, the count is
    scaled to our share of them (the runnable tasks are counted machine-wide).
    """
    counts = []
    for _ in range(readings):
        runnable = runnable_tasks()
        if runnable is None:
            return 0
        counts.append(runnable - own_running_threads() - (ranks - 1))
    others = max(0, min(counts))
    total = os.cpu_count() or 1
    cores = usable_cores() if cores is None else cores
    if total > cores:
        others = math.floor(others * cores / total)
    return others


def choose_threads(cores: int, ranks: int = 1, readers: int = 0, others: int = 0) -> int:
    """The arithmetic of the policy: free cores shared out among ranks, minus readers, >= 1."""
    free = max(cores - max(others, 0), 1)
    share = max(free // max(ranks, 1), 1)
    return max(share - max(readers, 0), 1)


def plan(
    readers: int = 0,
    *,
    env: Mapping[str, str] | None = None,
    cores: int | None = None,
    ranks: int | None = None,
    others: int | None = None,
) -> ThreadPlan:
    """Decide the BLAS threads for a run of this process (the module's policy).

    ``readers`` is the number of this process's own busy threads besides the BLAS (1 for
    the streaming read-ahead). The other arguments replace what is read from the machine.
    """
    env = os.environ if env is None else env
    own = env.get(OWN_VAR, "").strip()
    if own:
        if not own.isdigit() or int(own) < 1:
            raise InputError(f"{OWN_VAR} must be a positive integer, got {own!r}")
        return ThreadPlan(int(own), f"{OWN_VAR}={own}")
    set_by_user = [name for name in USER_VARS if env.get(name, "").strip()]
    if set_by_user:
        return ThreadPlan(None, f"left to the BLAS: {set_by_user[0]} is set")
    cores = usable_cores() if cores is None else cores
    ranks = local_ranks(env) if ranks is None else ranks
    others = other_load(ranks, cores) if others is None else others
    threads = choose_threads(cores, ranks, readers, others)
    reason = f"{cores} usable cores, {ranks} local rank(s), {readers} reader(s), {others} busy"
    return ThreadPlan(threads, reason, cores, ranks, readers, others)


#: Where a run's thread count is kept in ``TrainState.resume`` (and so in checkpoints).
RESUME_KEY = "blas.threads"
#: Where a run's OpenBLAS kernel set (``OPENBLAS_CORETYPE``'s choices) is kept beside it.
KERNELS_KEY = "blas.kernels"
_ACTIVE: contextvars.ContextVar[ThreadPlan | None] = contextvars.ContextVar(
    "deepnet_blas_plan", default=None
)


def recorded(
    resume: Mapping[str, Any] | None, env: Mapping[str, str] | None = None
) -> ThreadPlan | None:
    """The thread count a resumed run started with (``resume[RESUME_KEY]``), or None.

    A user's own setting (the variables of :data:`USER_VARS`, ``DEEPNET_BLAS_THREADS``)
    still wins. Why keep it: OpenBLAS's float64 products differ in their last bits between
    one and two threads, so a run continues bit for bit only on the count it started with.
    """
    value = (resume or {}).get(RESUME_KEY)
    env = os.environ if env is None else env
    if value is None or any(env.get(name, "").strip() for name in (*USER_VARS, OWN_VAR)):
        return None
    n = int(value)
    return ThreadPlan(max(n, 1), f"{n} thread(s), as the run started (resumed)")


@contextlib.contextmanager
def blas_threads(
    readers: int = 0,
    *,
    decided: ThreadPlan | None = None,
    resume: Mapping[str, Any] | None = None,
    report: Callable[[str], None] | None = None,
) -> Iterator[ThreadPlan]:
    """Run the body with the BLAS limited to :func:`plan`'s threads; restored on exit.

    Decided once per run: ``resume`` holding a recorded count takes it (:func:`recorded`);
    inside another ``blas_threads`` the outer decision is kept (with more ``readers``
    re-shared from the outer reading, without reading the machine again). A resume under
    another kernel set is reported (:func:`check_kernels`; ``report`` instead of a warning).
    """
    outer = _ACTIVE.get()
    chosen = decided or recorded(resume)
    if outer is None:  # the outermost call speaks for the run, once
        check_kernels(resume, report)
    if chosen is None and outer is not None:
        chosen = outer
        if readers > outer.readers and outer.cores:
            n = choose_threads(outer.cores, outer.ranks, readers, outer.others)
            reason = outer.reason.replace(f"{outer.readers} reader(s)", f"{readers} reader(s)")
            chosen = ThreadPlan(n, reason, outer.cores, outer.ranks, readers, outer.others)
    if chosen is None:
        chosen = plan(readers)
    token = _ACTIVE.set(chosen)
    try:
        if chosen.threads is None:
            yield chosen
        else:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=chosen.threads, user_api="blas"):
                yield chosen
    finally:
        _ACTIVE.reset(token)


def recording(chosen: ThreadPlan, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (the loop's) with ``on_checkpoint`` handed states that record the count."""
    hook = options.get("on_checkpoint")
    if hook is None or chosen.threads is None:
        return options
    return {**options, "on_checkpoint": lambda state: hook(stamped(state, chosen))}


def stamped(state: Any, chosen: ThreadPlan) -> Any:
    """A TrainState whose ``resume`` records the thread count (:data:`RESUME_KEY`) and the
    BLAS kernel set (:data:`KERNELS_KEY`, where the BLAS names one)."""
    extra: dict[str, Any] = {} if chosen.threads is None else {RESUME_KEY: chosen.threads}
    kernels = kernel_set()
    if kernels is not None:
        extra[KERNELS_KEY] = kernels
    return dataclasses.replace(state, resume={**state.resume, **extra}) if extra else state


@functools.lru_cache(maxsize=1)
def kernel_set() -> str | None:
    """The kernel set NumPy's BLAS loaded (OpenBLAS's ``SkylakeX``, ``Haswell``...), or None.

    Fixed for the life of the process: OpenBLAS reads ``OPENBLAS_CORETYPE`` when it loads.
    """
    info = blas_info(ThreadPlan(None, ""))
    name = info.get("architecture") if info.get("library") == "openblas" else None
    return name if isinstance(name, str) and _KERNEL_NAME.fullmatch(name) else None


_KERNEL_NAME = re.compile(r"[A-Za-z0-9_]{1,32}")


def check_kernels(
    resume: Mapping[str, Any] | None, report: Callable[[str], None] | None = None
) -> None:
    """Warn when a resumed run started under another BLAS kernel set than this process has.

    The kernel set changes the products' last bits (docs/benchmarks.md, "OpenBLAS's kernel
    set"), and unlike the thread count it cannot be switched once NumPy is loaded; so the
    run continues to rounding, not bit for bit, and the warning says how to match it.
    """
    before = (resume or {}).get(KERNELS_KEY)
    now = kernel_set()
    if not isinstance(before, str) or not _KERNEL_NAME.fullmatch(before) or now in (None, before):
        return
    message = (
        f"this run started under OpenBLAS's {before} kernels and resumes under {now}: it "
        f"continues to rounding, not bit for bit; set OPENBLAS_CORETYPE={before} before "
        f"starting Python to resume it exactly"
    )
    if report is not None:
        report(message)
    else:
        warnings.warn(f"deepnet: {message}", RuntimeWarning, stacklevel=4)


def blas_info(decided: ThreadPlan | None = None) -> dict[str, Any]:
    """NumPy's BLAS: library, version, threading layer, threads it uses now; and the plan.

    For ``deepnet info``, ``deepnet bench`` and the benchmark JSON. With several BLAS
    libraries loaded (PyTorch brings its own), the one NumPy links is reported.
    """
    import numpy  # noqa: F401  (loads NumPy's BLAS)
    from threadpoolctl import threadpool_info

    blas = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    mine = [lib for lib in blas if "numpy" in str(lib.get("filepath", ""))] or blas
    out: dict[str, Any] = {"library": None, "version": None, "threads": None}
    if mine:
        lib = mine[0]
        out.update(
            library=lib.get("internal_api"),
            version=lib.get("version"),
            threads=lib.get("num_threads"),
            threading_layer=lib.get("threading_layer"),
            architecture=lib.get("architecture"),
        )
    chosen = plan() if decided is None else decided
    out["policy"] = asdict(chosen)
    return out


def describe(info: dict[str, Any] | None = None) -> str:
    """One line for ``deepnet info`` / ``deepnet bench``: the BLAS, its threads, the policy."""
    info = blas_info() if info is None else info
    policy = info.get("policy", {})
    chosen = policy.get("threads")
    decided = "left to the BLAS" if chosen is None else f"{chosen} thread(s)"
    # The kernel set matters for speed (docs/benchmarks.md, "OpenBLAS's kernel set").
    kernels = f", {info['architecture']} kernels" if info.get("architecture") else ""
    return (
        f"BLAS: {info.get('library') or 'unknown'} {info.get('version') or ''} "
        f"({info.get('threading_layer') or '?'}{kernels}), {info.get('threads')} thread(s) now; "
        f"deepnet's policy: {decided} ({policy.get('reason', '')})"
    )
