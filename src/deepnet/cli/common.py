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
import stat
import sys
import threading
from pathlib import Path
from typing import Any

from tqdm import tqdm

from deepnet import backend
from deepnet.data import FILES, data_dir
from deepnet.errors import DataError, DeepnetError, InputError, ModelFileError, ShapeError
from deepnet.paths import safe_text
from deepnet.training import TrainState

USAGE_ERRORS = (InputError, DataError, ModelFileError, ShapeError)
SILENT = False  # set on MPI ranks other than 0: one rank speaks for all


def exit_status(exc: DeepnetError) -> int:
    """2 for errors in what the user gave (nothing ran), 1 for a run that failed."""
    return 2 if isinstance(exc, USAGE_ERRORS) else 1


def error(message: str) -> None:
    """Print deepnet's one-line error on stderr (on MPI rank 0 only), terminal-safe."""
    if not SILENT:
        print(f"deepnet: error: {safe_text(message)}", file=sys.stderr)


def warn(message: str) -> None:
    """Print a one-line warning on stderr (on MPI rank 0 only), terminal-safe."""
    if not SILENT:
        print(f"deepnet: warning: {safe_text(message)}", file=sys.stderr, flush=True)


def os_error_line(exc: OSError) -> str:
    """An OSError as one line naming the path."""
    where = f"{safe_text(exc.filename)}: " if exc.filename else ""
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


_SPECIAL = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_readable(path: Path, what: str) -> None:
    """Refuse an input that exists but cannot be read as a file: a folder, a FIFO or device
    (reading would block or never end), or one without read permission. A missing file is
    left to the reader, which says what the file should be. ``what`` names the file's role."""
    shown = safe_text(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DataError(f"{shown}: cannot read {what} ({os_error_line(exc)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise DataError(f"{shown} is a folder; {what} must be a regular file")
    for test, kind in _SPECIAL:
        if test(info.st_mode):
            raise DataError(
                f"{shown} is {kind}, not a regular file; {what} must be a regular file "
                "(deepnet never reads from special files: they can block for ever)"
            )
    try:  # never blocks: a regular file, opened without waiting
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)))
    except PermissionError:
        raise DataError(f"{shown}: permission denied (cannot read {what})") from None
    except OSError as exc:
        raise DataError(f"{shown}: cannot read {what} ({exc.strerror or exc})") from None


def data_files(folder: str | None, synthetic: bool, origin: str) -> dict[str, Path]:
    """The course files a command will read, by role, checked before anything is loaded.

    ``folder`` as :func:`deepnet.data.load_cat_data` takes it (None: ``$DEEPNET_DATA``, else
    the synthetic set); ``origin`` is where it came from, for messages ("--data",
    "DEEPNET_DATA"). A data folder that is a file, and data files that are folders, special
    files or unreadable are refused with the path and the real cause; the rest (a missing
    folder or file, a file that is not the course's) is the reader's to say.
    """
    root = None if synthetic else data_dir(folder)
    if root is None:
        from deepnet.synthetic import cache_dir  # only for the synthetic set

        root, origin = cache_dir(), ""
    elif os.path.exists(root) and not os.path.isdir(root):
        raise DataError(
            f"{origin} {safe_text(root)} is a file, not a folder: give the folder holding "
            f"{FILES['train']} and {FILES['test']}"
        )
    files = {"the training data": root / FILES["train"], "the test data": root / FILES["test"]}
    if origin:  # the synthetic files are deepnet's own, rewritten when damaged
        for role, path in files.items():
            check_readable(path, role)
    return files


class Progress:
    """A tqdm bar of the work done, plus the course's "Cost after iteration i" lines.

    At full batch the bar counts iterations and moves after each (:meth:`step`, the loop's
    ``on_step``). A mini-batch run (``unit="epoch"`` with ``examples`` per epoch) counts
    examples, moving after every mini-batch step (:meth:`batch`, the loop's ``on_batch``),
    with ``epoch i/N`` beside it. Both are host counts, no device read, so the rate and the
    time left are measured from the first seconds. The cost shown changes only when the
    loop records one (the callback), where it is read anyway.
    """

    def __init__(
        self,
        total: int,
        print_every: int,
        enabled: bool | None,
        initial: int = 0,
        unit: str = "iteration",
        examples: int | None = None,
    ) -> None:
        if enabled is None:  # by default, a bar only on a terminal
            enabled = sys.stderr.isatty()
        self.print_every, self.unit, self.total = print_every, unit, total
        self.per = examples if unit == "epoch" and examples else 1  # bar units per iteration
        self.bar = tqdm(
            total=total * self.per,
            initial=initial * self.per,
            unit="it" if self.per == 1 else "ex",
            unit_scale=self.per > 1,
            disable=not enabled,
            dynamic_ncols=True,
        )
        if self.per > 1:
            self.bar.set_description(f"epoch {initial}/{total}", refresh=False)

    def step(self, done: int) -> None:
        """The loop's ``on_step``: ``done`` iterations (epochs) are finished."""
        self.bar.update(done * self.per - self.bar.n)
        if self.per > 1:
            self.bar.set_description(f"epoch {done}/{self.total}", refresh=False)

    def batch(self, examples: int) -> None:
        """The loop's ``on_batch``: a mini-batch step of ``examples`` is done."""
        self.bar.update(examples)

    def __call__(self, state: TrainState, cost: float) -> None:
        """The training callback: ``state.iteration - 1`` is the iteration just recorded."""
        done = state.iteration - 1
        self.bar.set_postfix(cost=f"{cost:.6f}", refresh=False)
        if self.print_every and done % self.print_every == 0:
            tqdm.write(f"Cost after {self.unit} {done}: {cost}", file=sys.stdout)

    def close(self, finished: bool = True) -> None:
        """Fill the bar (unless the run stopped early: it then shows where it stopped) and
        take it off the screen's last line."""
        if finished:
            self.step(self.total)
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
