"""Atomic file writes: a crash mid-write never leaves a half-written file in place of a good one.

The content goes to a temporary file in the target's own folder (so the final rename never
crosses file systems), is flushed and fsync'ed, then ``os.replace``d over the target, and the
folder itself is fsync'ed so the rename survives a power cut.

The temporary file is named ``.<name>.<host>-<pid>.<random>.tmp`` beside the target: one
left behind by ``kill -9`` or a power cut is recognised as deepnet's and removed by the next
write of the same target (or by :func:`clean_stale_temporaries`) once its writer is dead or
it is older than :data:`STALE_AFTER_S`. A write that fails (disk full, permission, ...)
raises :class:`WriteError`, a :class:`~deepnet.errors.DeepnetError` naming the target and the
cause; :func:`try_write` turns it into a warning for writes that may fail (periodic
checkpoints).

Reading has the opposite hazard, a path that never ends: :func:`open_regular` opens a file
only if it is a regular one, never blocking on a FIFO or a device.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import socket
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from deepnet.errors import DeepnetError

STALE_AFTER_S = 30 * 60  # a temporary this old is stale even if its pid is alive (pid reuse)
_NAME_CHARS = 64  # the target's name as kept in the temporary's (stays under NAME_MAX)
_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


class WriteError(DeepnetError, OSError):
    """Writing an output failed; the message names the file and the cause.

    ``path`` is the target, ``disk_full`` says whether the device or quota is full. An
    existing file at ``path`` is untouched and no temporary is left behind.
    """

    def __init__(self, message: str, path: Path, err: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = err
        self.disk_full = err in _FULL

    def with_hint(self, hint: str) -> WriteError:
        """The same error with ``hint`` appended (e.g. where the finished run is safe)."""
        error = WriteError(f"{self}; {hint}", self.path, self.errno)
        error.__cause__ = self.__cause__
        return error


def atomic_write(
    path: str | os.PathLike, write: Callable[[BinaryIO], None], *, hint: str | None = None
) -> Path:
    """Call ``write(file)`` on a temporary file next to ``path``, then move it into place.

    Returns the final path. Missing parent folders are created; a symlink's target is
    replaced, not the link; a folder or special file (device, FIFO, socket) is never replaced.
    If anything fails, the temporary file is removed, any existing file at ``path`` is left
    untouched, and an ``OSError`` becomes :class:`WriteError` naming ``path`` and the cause
    (with ``hint`` appended when given). Stale temporaries of earlier writes of ``path`` are
    removed first.
    """
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    _refuse_special(path, hint)
    folder = path.parent
    clean_stale_temporaries(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = _create_temporary(path)
    except OSError as exc:  # name the file the caller asked for, not the temporary one
        raise _write_error(path, exc, hint) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, _mode_for(path))
        os.replace(tmp_name, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError) and not isinstance(exc, DeepnetError):
            raise _write_error(path, exc, hint) from None
        raise
    _fsync_folder(folder)
    return path


def try_write(
    save: Callable[[], object], what: str, *, warn: Callable[[str], None] | None = None
) -> bool:
    """Run ``save()``; on :class:`WriteError`, warn (one line) and return False instead of raising.

    For writes a run can survive, such as a periodic checkpoint: the previous file at the
    target is intact, so training goes on. ``what`` names the write in the warning ("the
    checkpoint at iteration 300"); ``warn`` defaults to printing on stderr.
    """
    try:
        save()
    except WriteError as exc:
        message = f"deepnet: warning: could not save {what}: {exc}; training continues"
        if warn is None:
            print(message, file=sys.stderr, flush=True)
        else:
            warn(message)
        return False
    return True


class NotRegularFileError(Exception):
    """The path is a folder, FIFO, socket or device; ``mode`` (``st_mode``) says which."""

    def __init__(self, mode: int) -> None:
        super().__init__(f"not a regular file (mode {mode:o})")
        self.mode = mode


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """``path`` opened for reading, if it is a regular file: looked at before opening, opened
    without blocking (a FIFO swapped in meanwhile cannot block), looked at again on the open
    file. Raises :class:`NotRegularFileError`, or the ``OSError`` of looking or opening, for the
    caller to word (each reader names what it expected)."""
    if not stat.S_ISREG(mode := os.stat(path).st_mode):
        raise NotRegularFileError(mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    if not stat.S_ISREG(mode := os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegularFileError(mode)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def temporary_name(path: Path) -> str:
    """The name of a new temporary for ``path``: ``.<name>.<host>-<pid>.<random>.tmp``."""
    return f".{path.name[:_NAME_CHARS]}.{_HOST}-{os.getpid()}.{secrets.token_hex(4)}.tmp"


def clean_stale_temporaries(
    path: str | os.PathLike, max_age_s: float = STALE_AFTER_S
) -> list[Path]:
    """Remove deepnet's leftover temporaries of ``path``; returns those removed.

    Only files named as :func:`temporary_name` names them for this target (or as the
    previous version did, ``.<name>.XXXXXXXX.tmp``), regular, owned by this user, and
    stale: written on this host by a process that no longer exists, or not modified for
    ``max_age_s`` seconds. Never raises: a folder that cannot be listed is left alone.
    """
    path = Path(path)
    ours = re.compile(
        re.escape(f".{path.name[:_NAME_CHARS]}.")
        + r"(?:(?P<host>[0-9a-f]{6})-(?P<pid>\d+)\.[0-9a-f]{8}|[a-z0-9_]{8})\.tmp"
    )
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = ours.fullmatch(entry.name)
        if not match:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            continue
        dead = match["host"] == _HOST and not _alive(int(match["pid"]))
        if dead or now - info.st_mtime > max_age_s:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


_HOST = _host_tag()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process, or a pid we cannot ask about: leave it
    return True


def _create_temporary(path: Path) -> tuple[int, str]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        name = str(path.parent / temporary_name(path))
        try:
            return os.open(name, flags, 0o600), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


def _refuse_special(path: Path, hint: str | None) -> None:
    """The last line of defence: os.replace would put a regular file in place of a device."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return  # a new path, or one whose problem the write itself reports
    if stat.S_ISREG(mode):
        return
    what = "a folder" if stat.S_ISDIR(mode) else "a special file (device, FIFO or socket)"
    message = f"cannot write {path}: it is {what}, not a regular file; deepnet never replaces one"
    raise WriteError(message + (f"; {hint}" if hint else ""), path, errno.EEXIST)


def _write_error(path: Path, exc: OSError, hint: str | None) -> WriteError:
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):  # a parent folder that is a file
        for folder in path.parents:
            if folder.exists() and not folder.is_dir():
                message = f"cannot write {path}: {folder} is a file, not a folder"
                return WriteError(message + (f"; {hint}" if hint else ""), path, exc.errno)
    cause = _FULL.get(exc.errno) or exc.strerror or str(exc)
    folder = exc.filename if exc.filename and Path(exc.filename) != path else None
    if folder and not str(folder).endswith(".tmp"):
        cause = f"{cause} ({folder})"
    message = f"cannot write {path}: {cause}"
    if hint:
        message += f"; {hint}"
    return WriteError(message, path, exc.errno)


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777  # keep the mode of the file being replaced
    except OSError:
        return 0o644


def _fsync_folder(folder: Path) -> None:
    # Makes the rename durable on POSIX; Windows cannot open folders, and that is fine.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
