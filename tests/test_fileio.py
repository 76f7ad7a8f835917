"""Atomic writes (deepnet.fileio): disk full, failures that only warn, stale temporaries."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from deepnet.errors import DeepnetError
from deepnet.fileio import (
    STALE_AFTER_S,
    WriteError,
    atomic_write,
    clean_stale_temporaries,
    temporary_name,
    try_write,
)
from deepnet.model_io import Model, load_model, save_model

pytestmark = pytest.mark.timeout(60)  # a hang (a FIFO, a lock) fails, never stalls


def model(width: int = 2) -> Model:
    rng = np.random.RandomState(0)
    parameters = {
        "W1": rng.rand(width, 12288),
        "b1": np.zeros((width, 1)),
        "W2": np.ones((1, width)),
        "b2": np.zeros((1, 1)),
    }
    return Model(parameters, [12288, width, 1], costs=[0.7])


def full_disk(handle) -> None:
    handle.write(b"x" * 100)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_names_the_file_and_keeps_the_old_one(tmp_path: Path):
    target = tmp_path / "m.npz"
    save_model(model(), target)
    before = target.read_bytes()
    with pytest.raises(WriteError) as caught:
        atomic_write(target, full_disk)
    error = caught.value
    assert str(error) == f"cannot write {target}: no space left on device"
    assert error.disk_full and error.errno == errno.ENOSPC and error.path == target
    assert isinstance(error, DeepnetError) and isinstance(error, OSError)
    hinted = error.with_hint("the finished run is safe in run.ckpt.npz")
    assert str(hinted) == (
        f"cannot write {target}: no space left on device; the finished run is safe in run.ckpt.npz"
    )
    with pytest.raises(WriteError, match="no space left on device; keep calm$"):
        atomic_write(target, full_disk, hint="keep calm")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]  # no temporary left


def test_fsync_failing_for_lack_of_space_is_a_write_error(tmp_path: Path, monkeypatch):
    def no_space(fd):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(WriteError, match=r"m.npz: disk quota exceeded$") as caught:
        save_model(model(), tmp_path / "m.npz")
    assert caught.value.disk_full
    assert list(tmp_path.iterdir()) == []


def test_a_periodic_save_that_fails_only_warns(tmp_path: Path):
    warnings = []
    target = tmp_path / "run.ckpt.npz"
    ok = try_write(lambda: atomic_write(target, full_disk), "the checkpoint at iteration 300",
                   warn=warnings.append)  # fmt: skip
    assert ok is False
    assert warnings == [
        f"deepnet: warning: could not save the checkpoint at iteration 300: cannot write "
        f"{target}: no space left on device; training continues"
    ]
    assert try_write(lambda: save_model(model(), target), "the checkpoint", warn=warnings.append)
    assert len(warnings) == 1 and load_model(target).layer_dims == [12288, 2, 1]

    def other_failure():
        raise ValueError("a bug, not a full disk")

    with pytest.raises(ValueError, match="a bug"):  # only write errors are turned into warnings
        try_write(other_failure, "x", warn=warnings.append)


def test_a_real_full_disk(tmp_path: Path):
    """On a 1 MiB tmpfs: a 2 MB model does not fit, the 200 kB one stays, nothing is left over."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        target = folder / "run.ckpt.npz"
        save_model(model(2), target)
        before = target.read_bytes()
        warnings = []
        assert not try_write(lambda: save_model(model(20), target), "the checkpoint",
                             warn=warnings.append)  # fmt: skip
        assert warnings[0].endswith(
            f"cannot write {target}: no space left on device; training continues"
        )
        with pytest.raises(WriteError, match=f"^cannot write {folder}/m.npz: no space left"):
            save_model(model(20), folder / "m.npz")
        assert target.read_bytes() == before
        assert sorted(p.name for p in folder.iterdir()) == ["run.ckpt.npz"]
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_other_write_failures_name_the_file(tmp_path: Path):
    (tmp_path / "FILE").write_text("x")
    for target in (tmp_path / "FILE" / "m.npz", tmp_path / "FILE" / "sub" / "m.npz"):
        with pytest.raises(
            WriteError, match=f"^cannot write {target}: {tmp_path}/FILE is a file, no"
        ):
            save_model(model(), target)
    assert (tmp_path / "FILE").read_text() == "x"


def test_temporaries_carry_the_host_and_pid(tmp_path: Path):
    name = temporary_name(tmp_path / "model.npz")
    assert name.startswith(".model.npz.") and name.endswith(".tmp")
    assert f"-{os.getpid()}." in name
    long = temporary_name(tmp_path / ("x" * 250 + ".npz"))
    assert len(long) < 255  # a long target name still leaves room for the temporary's


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


def test_stale_temporaries_of_our_naming_are_removed_and_nothing_else(tmp_path: Path):
    target = tmp_path / "m.npz"
    ours_alive = temporary_name(target)  # this process: alive
    host_pid = ours_alive.split(".")[-3]  # "<host>-<pid>"
    host = host_pid.split("-")[0]
    dead = f".m.npz.{host}-{dead_pid()}.0123abcd.tmp"
    other_host = f".m.npz.ffffff-{dead_pid()}.0123abcd.tmp"  # maybe alive on another machine
    old_style = ".m.npz.ab_12xyz.tmp"  # mkstemp's, from deepnet before this version
    names = [ours_alive, dead, other_host, old_style, ".m.npz.notes.tmp", ".other.npz." + dead[7:]]
    for name in names:
        (tmp_path / name).write_bytes(b"partial")
    os.mkfifo(tmp_path / f".m.npz.{host}-{dead_pid()}.fifo0000.tmp")  # not a regular file
    removed = clean_stale_temporaries(target)
    assert [p.name for p in removed] == [dead]
    old = time.time() - STALE_AFTER_S - 60
    for name in (other_host, old_style):
        os.utime(tmp_path / name, (old, old))
    assert sorted(p.name for p in clean_stale_temporaries(target)) == sorted(
        [other_host, old_style]
    )
    left = sorted(p.name for p in tmp_path.iterdir())
    assert ours_alive in left and ".m.npz.notes.tmp" in left and ".other.npz." + dead[7:] in left


KILLED_WRITER = """
import sys, time
from deepnet.fileio import atomic_write
def write(handle):
    handle.write(b"x" * 100_000)
    handle.flush()
    print("writing", flush=True)
    time.sleep(60)
atomic_write(sys.argv[1], write)
"""


def test_a_temporary_left_by_kill_9_is_cleaned_by_the_next_write(tmp_path: Path):
    target = tmp_path / "run.ckpt.npz"
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "writing"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        writer.stdout.close()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".run.ckpt.npz.")
    save_model(model(), target)  # the next run's write
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt.npz"]


def test_special_files_and_folders_are_never_replaced(tmp_path: Path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    for path, what in (
        (Path("/dev/null"), "a special file (device, FIFO or socket)"),
        (tmp_path / "fifo", "a special file (device, FIFO or socket)"),
        (tmp_path / "dir", "a folder"),
    ):
        with pytest.raises(WriteError, match=f"^cannot write {path}: it is {re.escape(what)}, not"):
            atomic_write(path, lambda handle: handle.write(b"x"))
    assert Path("/dev/null").is_char_device() and (tmp_path / "fifo").is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "fifo"]


def test_a_symlink_keeps_pointing_at_the_replaced_file(tmp_path: Path):
    (tmp_path / "real.bin").write_bytes(b"old")
    os.symlink("real.bin", tmp_path / "link.bin")
    assert atomic_write(tmp_path / "link.bin", lambda h: h.write(b"new")) == tmp_path / "real.bin"
    assert (tmp_path / "link.bin").is_symlink() and (tmp_path / "link.bin").read_bytes() == b"new"
