"""What every ``deepnet`` subcommand shares: one-line errors, the device line, the progress
bar, the stop request (SIGINT/SIGTERM), output-path checks.

Exit status rule, the same for every subcommand and mode: 0 done; 2 the command cannot run
as asked (usage, input, data, model-file or shape errors: nothing was trained or written);
1 the run itself failed (divergence, device, MPI, I/O); 128 + N stopped by signal N
(130 for Ctrl-C), with the run saved in its checkpoint.
"""

from __future__ import annotations

import importlib.metadata
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from tqdm import tqdm

from deepnet import backend
from deepnet.errors import DataError, DeepnetError, InputError, ModelFileError, ShapeError
from deepnet.training import TrainState

USAGE_ERRORS = (InputError, DataError, ModelFileError, ShapeError)
SILENT = False  # set on MPI ranks other than 0: one rank speaks for all


def exit_status(exc: DeepnetError) -> int:
    """2 for errors in what the user gave (nothing ran), 1 for a run that failed."""
    return 2 if isinstance(exc, USAGE_ERRORS) else 1


def error(message: str) -> None:
    """Print deepnet's one-line error on stderr (on MPI rank 0 only)."""
    if not SILENT:
        print(f"deepnet: error: {message}", file=sys.stderr)


def os_error_line(exc: OSError) -> str:
    """An OSError as one line naming the path."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def version(distribution: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def device_line(device: str) -> str:
    """The device as the reports name it."""
    if device == "cuda":
        return f"cuda ({backend.gpu_description()})"
    return "cpu (NumPy)" if device == "cpu" else backend.describe(device)


def quote(path: Path) -> str:
    """A path as a shell would need it typed."""
    return shlex.quote(str(path))


def check_writable(path: Path) -> None:
    """Refuse an output path that is a folder or sits in a folder we cannot write."""
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name for the output")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the nearest folder that exists is where one gets created
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: {folder} is not writable")


class Progress:
    """A tqdm bar showing the current cost, plus the course's "Cost after iteration i" lines."""

    def __init__(
        self, total: int, print_every: int, enabled: bool | None, initial: int = 0
    ) -> None:
        if enabled is None:  # by default, a bar only on a terminal
            enabled = sys.stderr.isatty()
        self.print_every = print_every
        self.bar = tqdm(
            total=total, initial=initial, unit="it", disable=not enabled, dynamic_ncols=True
        )

    def __call__(self, state: TrainState, cost: float) -> None:
        """The training callback: ``state.iteration - 1`` is the iteration just recorded."""
        done = state.iteration - 1
        self.bar.set_postfix(cost=f"{cost:.6f}", refresh=False)
        self.bar.update(state.iteration - self.bar.n)
        if self.print_every and done % self.print_every == 0:
            tqdm.write(f"Cost after iteration {done}: {cost}", file=sys.stdout)

    def close(self, finished: bool = True) -> None:
        """Fill the bar (unless the run stopped early) and take it off the screen's last line."""
        if finished:
            self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()


class StopRequest:
    """While training, SIGINT (Ctrl-C) and SIGTERM ask the loop to stop after this iteration.

    A context manager: it installs its handlers on entry and puts the previous ones back on
    exit. Called, it says whether a stop was asked for; ``signum`` says by which signal.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # only it may set handlers
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum

    def __call__(self) -> bool:
        return self.signum is not None

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
