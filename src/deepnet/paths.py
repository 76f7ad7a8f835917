"""Output rules: deepnet writes only new paths or files it wrote itself, and never an input.

:func:`check_outputs` is called once, before any work, with every file a command will write
and every file it reads. It refuses, with one line naming the option, the path and the real
cause: an empty name or a folder name (``dir/``), outputs that are the same file as each other
or as an input (after symlinks, ``..`` and hard links: same device and inode), an existing
file deepnet did not write (``notes.txt``), special files (``/dev/null``, FIFOs, sockets) and
folders, a parent that is a file, and a folder that cannot be written. Missing parent folders
are fine: the atomic writer creates them. Replacing a deepnet model or checkpoint is allowed,
and comes back as a notice for the command to print.

deepnet recognises its own files by content: a model or checkpoint is a ZIP whose
``deepnet.json`` says ``"format": "deepnet-model"``; a picture is a PNG carrying the text
chunk :data:`PNG_KEY` (:func:`mark_png` for Pillow, :data:`PNG_METADATA` for matplotlib).

:class:`CheckpointLock` is an advisory lock (``flock``) on ``<checkpoint>.lock`` recording
the holder's pid, so two runs cannot share one checkpoint. :func:`safe_text` makes any text
(class names, paths) safe to print on a terminal.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import shlex
import socket
import stat
import struct
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepnet.errors import DeepnetError, InputError

KINDS = ("model", "checkpoint", "png")
PNG_KEY = "deepnet"  # the PNG text chunk that marks a picture deepnet wrote
PNG_METADATA = {PNG_KEY: "picture written by deepnet"}  # savefig(..., metadata=PNG_METADATA)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_META_BYTES = 1 << 20
_MAX_PNG_CHUNKS = 100_000


class OutputError(InputError):
    """An output path deepnet refuses to write (collision, foreign or special file, ...)."""


class CheckpointInUseError(DeepnetError):
    """Another running deepnet process holds the checkpoint's lock."""


def safe_text(text: object) -> str:
    """``text`` with every non-printable character (escape codes, newlines) shown as an escape.

    ``"cat\\x1b[2J"`` prints as ``cat\\x1b[2J``, literally: nothing reaches the terminal that
    could move the cursor, clear the screen or fake a line.
    """
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in str(text))


# ---------------------------------------------------------------------------------------------
# recognising deepnet's own files


def mark_png(pnginfo: Any = None) -> Any:
    """A Pillow ``PngInfo`` (``pnginfo``, or a new one) carrying deepnet's marker text chunk.

    Use: ``image.save(handle, format="PNG", pnginfo=mark_png())``. With matplotlib:
    ``figure.savefig(handle, format="png", metadata=PNG_METADATA)``.
    """
    from PIL.PngImagePlugin import PngInfo  # Pillow only when writing a PNG

    info = PngInfo() if pnginfo is None else pnginfo
    key, value = next(iter(PNG_METADATA.items()))
    info.add_text(key, value)
    return info


def is_deepnet_png(path: str | os.PathLike) -> bool:
    """True when ``path`` is a PNG with deepnet's marker chunk; reads chunk headers only."""
    try:
        with open(path, "rb") as handle:
            if handle.read(8) != _PNG_SIGNATURE:
                return False
            for _ in range(_MAX_PNG_CHUNKS):
                header = handle.read(8)
                if len(header) < 8:
                    return False
                length, kind = struct.unpack(">I4s", header)
                if kind in (b"tEXt", b"iTXt", b"zTXt"):
                    keyword = handle.read(min(length, 80)).split(b"\0", 1)[0]
                    if keyword == PNG_KEY.encode():
                        return True
                    handle.seek(length - min(length, 80) + 4, os.SEEK_CUR)
                elif kind == b"IEND":
                    return False
                else:
                    handle.seek(length + 4, os.SEEK_CUR)
    except (OSError, struct.error, ValueError):
        return False
    return False


def deepnet_file_kind(path: str | os.PathLike) -> str | None:
    """What deepnet file ``path`` is ("model", "checkpoint" or "png"), or None if not deepnet's.

    Reads only the PNG chunk headers or the ZIP's small ``deepnet.json``; raises ``OSError``
    when the file cannot be read at all (the caller says why).
    """
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head == _PNG_SIGNATURE:
        return "png" if is_deepnet_png(path) else None
    if not head.startswith(b"PK"):
        return None
    meta = _zip_meta(Path(path))
    if not isinstance(meta, dict) or meta.get("format") != "deepnet-model":
        return None
    training = meta.get("training")
    record = training.get("checkpoint") if isinstance(training, dict) else None
    if isinstance(record, dict) and record.get("format") == "deepnet-checkpoint":
        return "checkpoint"
    return "model"


def _zip_meta(path: Path) -> object:
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("deepnet.json")
            if info.file_size > _MAX_META_BYTES or info.compress_size > path.stat().st_size:
                return None
            with archive.open(info) as member:
                return json.loads(member.read(_MAX_META_BYTES).decode("utf-8"))
    except (KeyError, zipfile.BadZipFile, ValueError, RecursionError, RuntimeError,
            NotImplementedError, EOFError, OSError):  # fmt: skip
        return None


# ---------------------------------------------------------------------------------------------
# checking outputs before any work


@dataclass(frozen=True)
class Output:
    """One checked output: where to write it, and what (if anything) it replaces."""

    label: str  # the option or role, as the user knows it: "--out"
    path: Path  # the path to write (symlinks resolved: the link's target is replaced)
    kind: str  # "model", "checkpoint" or "png"
    replaces: str | None  # the kind of deepnet file already there, None for a new path
    given: str = ""  # the path as the user gave it, for messages

    @property
    def notice(self) -> str | None:
        """A line for the screen when a model or checkpoint is replaced, else None."""
        if self.replaces in ("model", "checkpoint"):
            where = safe_text(self.given or self.path)
            return f"replacing the deepnet {self.replaces} {where} ({self.label})"
        return None


def check_outputs(
    outputs: Mapping[str, tuple[str | os.PathLike, str]],
    inputs: Mapping[str, str | os.PathLike] | None = None,
) -> dict[str, Output]:
    """Check every output of a command before any work; returns them by label.

    ``outputs`` maps a label (the option, e.g. ``"--out"``) to ``(path, kind)`` with kind
    one of :data:`KINDS`; ``inputs`` maps a description (``"the training data"``) to a file
    the command reads. Raises :class:`OutputError` naming the option, the path and the cause;
    see the module docstring for the rules. Write each output to the returned ``.path``.
    """
    resolved = {label: (_resolve(label, os.fspath(path), kind), str(os.fspath(path)), kind)
                for label, (path, kind) in outputs.items()}  # fmt: skip
    seen: dict[object, str] = {}
    for label, (path, given, _) in resolved.items():
        key = _identity(path)
        if key in seen:
            first = resolved[seen[key]][1]
            both = (
                f"{seen[key]} and {label} are the same file ({safe_text(given)})"
                if first == given
                else f"{seen[key]} {safe_text(first)} and {label} {safe_text(given)} are the same "
                f"file ({safe_text(path)})"
            )
            raise OutputError(f"{both}; give each output its own path")
        seen[key] = label
    for description, path in (inputs or {}).items():
        key = _identity(Path(os.path.realpath(path)))
        if key in seen:
            label = seen[key]
            out, given, _ = resolved[label]
            raise OutputError(
                f"{label} {_shown(given, out)} is {description}, which this command reads; "
                "deepnet never writes over its inputs: choose another path"
            )
    return {label: _check_one(label, given, path, kind)
            for label, (path, given, kind) in resolved.items()}  # fmt: skip


def _identity(path: Path) -> object:
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return os.path.normcase(os.path.abspath(path))
    return (info.st_dev, info.st_ino)


_SPECIAL = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _shown(given: str, path: Path) -> str:
    """The path as given, and where it leads when a symlink sends it elsewhere."""
    if not os.path.islink(given):
        return safe_text(given)
    return f"{safe_text(given)} (a link to {safe_text(path)})"


def _resolve(label: str, given: str | bytes, kind: str) -> Path:
    """The path to write (symlinks, ``..`` resolved), after the checks on the name itself."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    if isinstance(given, bytes):
        given = os.fsdecode(given)
    shown = safe_text(given)
    if not given.strip():
        raise OutputError(f"{label} is empty; give a file name such as runs/model.npz")
    if "\0" in given:
        raise OutputError(f"{label} {shown} contains a NUL character; give a plain file name")
    if given.endswith(("/", os.sep, "/.", "/..")) or Path(given).name in ("", ".", ".."):
        raise OutputError(
            f"{label} {shown} names a folder; give a file name inside it, e.g. "
            f"{safe_text(Path(given) / _example(kind))}"
        )
    return Path(os.path.realpath(given))  # a symlink's target is what gets replaced


def _check_one(label: str, given: str, path: Path, kind: str) -> Output:
    shown = _shown(given, path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        _check_new(label, shown, path if os.path.islink(given) else Path(given))
        return Output(label, path, kind, None, given)
    except NotADirectoryError:
        _check_new(label, shown, Path(given))  # names the ancestor that is a file
        raise OutputError(f"cannot write {label} {shown}: a folder above it is a file") from None
    except OSError as exc:
        raise OutputError(f"cannot write {label} {shown}: {_cause(exc)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise OutputError(
            f"{label} {shown} is a folder; give a file name inside it, e.g. "
            f"{safe_text(Path(given) / _example(kind))}"
        )
    for test, what in _SPECIAL:
        if test(info.st_mode):
            raise OutputError(
                f"{label} {shown} is {what}, not a regular file; deepnet writes only regular "
                "files and never replaces special ones"
            )
    try:
        existing = deepnet_file_kind(path)
    except OSError as exc:
        raise OutputError(
            f"{label} {shown} exists and cannot be read to check that deepnet wrote it "
            f"({_cause(exc)}); choose a new path"
        ) from None
    if existing is None:
        raise OutputError(
            f"{label} {shown} exists and is not a file deepnet wrote; deepnet replaces only its "
            "own models, checkpoints and pictures: choose a new path, or move the file away"
        )
    if existing != kind:
        raise OutputError(
            f"{label} {shown} is a deepnet {existing}, not a {_NOUNS[kind]}; deepnet will not "
            f"replace it with one: choose another path"
        )
    _check_folder(label, shown, path.parent)
    return Output(label, path, kind, existing, given)


_NOUNS = {"model": "model", "checkpoint": "checkpoint", "png": "picture (PNG)"}


def _example(kind: str) -> str:
    return {"model": "model.npz", "checkpoint": "model.ckpt.npz", "png": "costs.png"}[kind]


def _check_new(label: str, shown: str, path: Path) -> None:
    """A path that does not exist: its nearest existing ancestor must be a writable folder."""
    folder = path.parent
    while True:
        try:
            info = os.stat(folder)
            break
        except (FileNotFoundError, NotADirectoryError):
            if folder == folder.parent or not folder.name:
                raise OutputError(
                    f"cannot write {label} {shown}: no folder to create it in"
                ) from None
            folder = folder.parent
        except OSError as exc:
            raise OutputError(f"cannot write {label} {shown}: {_cause(exc)}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise OutputError(
            f"cannot write {label} {shown}: {safe_text(folder)} is a file, not a folder"
        )
    _check_folder(label, shown, folder)


def _check_folder(label: str, shown: str, folder: Path) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only(folder) else "permission denied"
        raise OutputError(
            f"cannot write {label} {shown}: {reason} on the folder {safe_text(folder)}"
        )


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def _cause(exc: OSError) -> str:
    if exc.errno == errno.EACCES:
        return "permission denied"
    return (exc.strerror or str(exc)).lower() if exc.strerror else str(exc)


# ---------------------------------------------------------------------------------------------
# a checkpoint in use


class CheckpointLock:
    """An advisory lock on a checkpoint, held in ``<checkpoint>.lock`` with the holder's pid.

    ``with CheckpointLock(path):`` (or :meth:`acquire` / :meth:`release`) around everything a
    run does with its checkpoint. A second process gets :class:`CheckpointInUseError` naming the
    holder. The kernel drops the lock when its process ends, even by ``kill -9``; a released
    lock removes its file. File systems without ``flock`` leave the run unlocked.
    """

    def __init__(self, checkpoint: str | os.PathLike) -> None:
        self.checkpoint = Path(checkpoint)
        self.path = self.checkpoint.with_name(self.checkpoint.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> CheckpointLock:
        """Take the lock now or raise :class:`CheckpointInUseError` (never waits)."""
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd) or "a process that is still starting"
                os.close(fd)
                raise CheckpointInUseError(
                    f"{safe_text(self.checkpoint)} is in use by another deepnet run ({holder}); "
                    "wait for it to finish or stop it, or give this run its own --checkpoint"
                ) from None
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    os.close(fd)
                    raise
                break  # no flock on this file system: an unlocked run, as before
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not removed by a releasing holder between our open and our flock
                break
            os.close(fd)
        else:
            raise CheckpointInUseError(
                f"{safe_text(self.checkpoint)}: its lock file keeps changing"
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S UTC"),
            "command": shlex.join(sys.argv)[:300],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps({"deepnet-lock": record}) + "\n").encode(), 0)
        self._fd = fd
        return self

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            raise OutputError(
                f"cannot lock {safe_text(self.checkpoint)}: {safe_text(self.path)}: {_cause(exc)}"
            ) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (info.st_size and _read_holder(fd) is None):
            os.close(fd)
            raise OutputError(
                f"cannot lock {safe_text(self.checkpoint)}: {safe_text(self.path)} exists and is "
                "not deepnet's lock file; move it away"
            )
        return fd

    def release(self) -> None:
        """Remove the lock file and drop the lock (safe to call twice)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if os.fstat(self._fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> CheckpointLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _read_holder(fd: int) -> str | None:
    """'pid N on HOST since T: COMMAND' from a lock file, or None when it is not one of ours."""
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))["deepnet-lock"]
        text = f"pid {int(record['pid'])} on {record['host']} since {record['since']}"
        return safe_text(f"{text}: {record['command']}" if record.get("command") else text)
    except (OSError, ValueError, KeyError, TypeError):
        return None
