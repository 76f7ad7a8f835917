"""Output rules (deepnet.paths): collisions, foreign and special files, clear causes, the lock."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepnet.errors import DeepnetError
from deepnet.model_io import Model, save_model
from deepnet.paths import (
    PNG_METADATA,
    CheckpointInUseError,
    CheckpointLock,
    OutputError,
    check_outputs,
    deepnet_file_kind,
    is_deepnet_png,
    mark_png,
    safe_text,
)

DIMS = [12288, 2, 1]
pytestmark = pytest.mark.timeout(60)  # a hang (a FIFO, a lock) fails, never stalls


def model(costs=(0.7,), training=None) -> Model:
    parameters = {
        "W1": np.ones((2, 12288)) * 0.01,
        "b1": np.zeros((2, 1)),
        "W2": np.ones((1, 2)),
        "b2": np.zeros((1, 1)),
    }
    return Model(parameters, list(DIMS), costs=list(costs), training=training or {})


def checkpoint_model() -> Model:
    return model(training={"checkpoint": {"format": "deepnet-checkpoint"}})


def deepnet_png(path: Path) -> Path:
    Image.new("RGB", (8, 8), "white").save(path, format="PNG", pnginfo=mark_png())
    return path


def outputs(**paths) -> dict:
    kinds = {"out": "model", "checkpoint": "checkpoint", "plot": "png"}
    return {f"--{name}": (path, kinds[name]) for name, path in paths.items()}


# ---------------------------------------------------------------------------------------------
# collisions


def test_outputs_that_are_one_file_are_refused(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = [
        (outputs(out="m.npz", checkpoint="m.npz"), "--out and --checkpoint are the same file"),
        (outputs(out="m.npz", plot="m.npz"), "--out and --plot are the same file"),
        (
            outputs(out="m.npz", plot="sub/../m.npz"),
            f"--out m.npz and --plot sub/../m.npz are the same file \\({tmp_path}/m.npz\\)",
        ),
        (outputs(out="m.npz", plot=str(tmp_path / "m.npz")), "same file"),
    ]
    for given, message in cases:
        with pytest.raises(OutputError, match=message):
            check_outputs(given)
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_outputs_through_links_are_the_same_file(tmp_path: Path):
    save_model(model(), tmp_path / "m.npz")
    os.symlink(tmp_path / "m.npz", tmp_path / "link.npz")
    os.link(tmp_path / "m.npz", tmp_path / "hard.npz")
    for other in ("link.npz", "hard.npz"):
        with pytest.raises(OutputError, match=f"--out .*m.npz and --checkpoint .*{other} are the"):
            check_outputs(outputs(out=tmp_path / "m.npz", checkpoint=tmp_path / other))


def test_an_output_that_is_an_input_is_refused(tmp_path: Path):
    data = tmp_path / "d"
    data.mkdir()
    (data / "train_catvnoncat.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    before = (data / "train_catvnoncat.h5").read_bytes()
    with pytest.raises(
        OutputError, match="--out .*train_catvnoncat.h5 is the training data, which this command"
    ):
        check_outputs(
            outputs(out=data / "train_catvnoncat.h5"),
            {"the training data": data / "train_catvnoncat.h5"},
        )
    # deepnet mislabeled m.npz --out m.npz: the model read is the PNG to write
    save_model(model(), tmp_path / "m.npz")
    with pytest.raises(OutputError, match="--out .*m.npz is the model, which this command reads"):
        check_outputs({"--out": (tmp_path / "m.npz", "png")}, {"the model": tmp_path / "m.npz"})
    assert (data / "train_catvnoncat.h5").read_bytes() == before


# ---------------------------------------------------------------------------------------------
# whose file it is


def test_foreign_and_special_files_are_never_replaced(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("hi\n")
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30))  # not deepnet's
    np.savez(tmp_path / "plain.npz", W1=np.zeros(2))
    for name, kind in (("notes.txt", "model"), ("photo.png", "png"), ("plain.npz", "model")):
        with pytest.raises(OutputError, match=f"{name} exists and is not a file deepnet wrote"):
            check_outputs({"--out": (tmp_path / name, kind)})
    os.mkfifo(tmp_path / "fifo")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    try:
        for path, what in (
            ("/dev/null", "a character device"),
            (tmp_path / "fifo", "a FIFO"),
            (tmp_path / "sock", "a socket"),
        ):
            with pytest.raises(OutputError, match=f"is {what}.*, not a regular file"):
                check_outputs({"--plot": (path, "png")})
    finally:
        server.close()
    with pytest.raises(OutputError, match="is a folder; give a file name inside it"):
        check_outputs(outputs(out=tmp_path))
    assert (tmp_path / "notes.txt").read_text() == "hi\n"


def test_deepnet_files_are_recognised_and_replacing_a_model_is_said(tmp_path: Path, monkeypatch):
    save_model(model(), tmp_path / "m.npz")
    save_model(checkpoint_model(), tmp_path / "m.ckpt.npz")
    deepnet_png(tmp_path / "costs.png")
    assert deepnet_file_kind(tmp_path / "m.npz") == "model"
    assert deepnet_file_kind(tmp_path / "m.ckpt.npz") == "checkpoint"
    assert deepnet_file_kind(tmp_path / "costs.png") == "png"
    checked = check_outputs(
        outputs(
            out=tmp_path / "m.npz", checkpoint=tmp_path / "m.ckpt.npz", plot=tmp_path / "costs.png"
        )
    )
    assert checked["--out"].replaces == "model"
    assert checked["--out"].notice == f"replacing the deepnet model {tmp_path / 'm.npz'} (--out)"
    monkeypatch.chdir(tmp_path)
    assert check_outputs(outputs(out="m.npz"))["--out"].notice == (
        "replacing the deepnet model m.npz (--out)"
    )
    assert checked["--plot"].replaces == "png" and checked["--plot"].notice is None
    new = check_outputs(outputs(out=tmp_path / "new.npz"))["--out"]
    assert new.replaces is None and new.notice is None and new.path == tmp_path / "new.npz"


def test_a_deepnet_file_of_another_kind_is_not_replaced(tmp_path: Path):
    save_model(model(), tmp_path / "m.npz")
    save_model(checkpoint_model(), tmp_path / "run.ckpt.npz")
    with pytest.raises(OutputError, match="m.npz is a deepnet model, not a picture"):
        check_outputs(outputs(plot=tmp_path / "m.npz"))
    with pytest.raises(OutputError, match="run.ckpt.npz is a deepnet checkpoint, not a model"):
        check_outputs(outputs(out=tmp_path / "run.ckpt.npz"))


def test_matplotlib_pictures_carry_the_marker(tmp_path: Path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(2, 2))
    figure.savefig(tmp_path / "ours.png", metadata=PNG_METADATA)
    figure.savefig(tmp_path / "theirs.png")
    plt.close(figure)
    assert is_deepnet_png(tmp_path / "ours.png") and not is_deepnet_png(tmp_path / "theirs.png")


def test_a_symlink_output_replaces_its_target_not_the_link(tmp_path: Path):
    save_model(model(), tmp_path / "real.npz")
    os.symlink("real.npz", tmp_path / "link.npz")
    checked = check_outputs(outputs(out=tmp_path / "link.npz"))["--out"]
    assert checked.path == tmp_path / "real.npz" and checked.replaces == "model"
    os.symlink(tmp_path / "notes.txt", tmp_path / "to-notes.npz")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(
        OutputError,
        match=r"to-notes.npz \(a link to .*/notes.txt\) exists and is not a file deepnet",
    ):
        check_outputs(outputs(out=tmp_path / "to-notes.npz"))


# ---------------------------------------------------------------------------------------------
# one-line causes


def test_bad_paths_get_their_real_cause(tmp_path: Path):
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "dir").mkdir()
    t = tmp_path
    cases = [
        ("", "--out is empty; give a file name such as runs/model.npz"),
        ("  ", "--out is empty"),
        (f"{t}/FILE/m.npz", f"cannot write --out {t}/FILE/m.npz: {t}/FILE is a file, not a folder"),
        (f"{t}/FILE/a/b/m.npz", f"{t}/FILE is a file, not a folder"),
        (
            f"{t}/dir/",
            f"--out {t}/dir/ names a folder; give a file name inside it, e.g. {t}/dir/model.npz",
        ),
        (f"{tmp_path}/new/", "names a folder"),
        (f"{tmp_path}/dir", "is a folder"),
        ("a\0b", "contains a NUL character"),
    ]  # fmt: skip
    for given, message in cases:
        with pytest.raises(OutputError, match=message.replace(".", r"\.").replace("(", r"\(")):
            check_outputs(outputs(out=given))
    assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "FILE",
        "dir",
    ]
    # missing folders are fine: the atomic writer creates them
    assert check_outputs(outputs(out=tmp_path / "a" / "b" / "m.npz"))["--out"].replaces is None


NOBODY = """
import os, sys
from deepnet.paths import check_outputs  # imported as root: the stdlib is in /root here
from deepnet.errors import DeepnetError
os.setgid(65534); os.setuid(65534)
try:
    check_outputs({"--out": (sys.argv[1], "model")})
except DeepnetError as exc:
    print(exc)
"""


def test_permission_denied_is_said(request: pytest.FixtureRequest):
    if os.getuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    top = Path(tempfile.mkdtemp(prefix="deepnet-perm-"))  # pytest's tmp_path is private (0700)
    request.addfinalizer(lambda: shutil.rmtree(top))
    top.chmod(0o755)
    locked = top / "locked"
    locked.mkdir(mode=0o755)
    for parent in top.parents:  # the unprivileged user must reach the folder
        if not parent.stat().st_mode & 0o001:
            pytest.skip(f"{parent} is not searchable by others")
    run = subprocess.run(
        [sys.executable, "-c", NOBODY, str(locked / "sub" / "m.npz")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if "Operation not permitted" in run.stderr or "ModuleNotFoundError" in run.stderr:
        pytest.skip("cannot run deepnet as an unprivileged user here")
    assert run.stdout.strip() == (
        f"cannot write --out {locked}/sub/m.npz: permission denied on the folder {locked}"
    ), run.stderr


def test_read_only_file_system_is_said(tmp_path: Path):
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        with pytest.raises(OutputError, match="read-only file system on the folder"):
            check_outputs(outputs(out=folder / "m.npz"))
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_safe_text_shows_control_characters_instead_of_printing_them():
    assert safe_text("cat") == "cat"
    assert safe_text("chat \u00e9t\u00e9 \U0001f408") == "chat \u00e9t\u00e9 \U0001f408"
    assert safe_text("cat\x1b[2J\x1b]0;pwned\x07\n") == "cat\\x1b[2J\\x1b]0;pwned\\x07\\n"
    assert safe_text("a\u202eb") == "a\\u202eb"  # right-to-left override
    assert all(c.isprintable() for c in safe_text("".join(map(chr, range(0, 0x3000)))))


# ---------------------------------------------------------------------------------------------
# the checkpoint lock

HOLDER = """
import sys, time
from deepnet.paths import CheckpointLock
with CheckpointLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_checkpoint_in_use_is_refused_naming_the_other_process(tmp_path: Path):
    checkpoint = tmp_path / "run.ckpt.npz"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(checkpoint)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        record = json.loads((tmp_path / "run.ckpt.npz.lock").read_text())["deepnet-lock"]
        assert record["pid"] == holder.pid
        with pytest.raises(CheckpointInUseError) as caught:
            CheckpointLock(checkpoint).acquire()
        message = str(caught.value)
        assert message.startswith(
            f"{checkpoint} is in use by another deepnet run (pid {holder.pid} on "
        )
        assert message.endswith(
            "wait for it to finish or stop it, or give this run its own --checkpoint"
        )
        assert isinstance(caught.value, DeepnetError)
    finally:
        holder.send_signal(signal.SIGKILL)  # as kill -9: the kernel releases the lock
        holder.wait(timeout=30)
        holder.stdout.close()
    with CheckpointLock(checkpoint) as lock:  # a dead holder's lock is free at once
        record = json.loads(lock.path.read_text())["deepnet-lock"]
        assert record["pid"] == os.getpid()
    assert not (tmp_path / "run.ckpt.npz.lock").exists()  # released: its file is removed


def test_the_lock_is_taken_once_per_process_and_refuses_foreign_lock_files(tmp_path: Path):
    lock = CheckpointLock(tmp_path / "a.ckpt.npz").acquire()
    assert lock.acquire() is lock
    with pytest.raises(CheckpointInUseError, match=f"pid {os.getpid()} "):
        CheckpointLock(tmp_path / "a.ckpt.npz").acquire()  # a second open file: refused too
    lock.release()
    lock.release()
    (tmp_path / "b.ckpt.npz.lock").write_text("my notes")
    with pytest.raises(OutputError, match="exists and is not deepnet's lock file"):
        CheckpointLock(tmp_path / "b.ckpt.npz").acquire()
    assert (tmp_path / "b.ckpt.npz.lock").read_text() == "my notes"


def test_deepnet_file_kind_reads_only_small_metadata(tmp_path: Path):
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        archive.writestr("deepnet.json", b"{" * (2 << 20))  # larger than any metadata
    assert deepnet_file_kind(tmp_path / "huge.npz") is None
    began = time.monotonic()
    Image.new("L", (4000, 4000)).save(tmp_path / "big.png")
    assert not is_deepnet_png(tmp_path / "big.png")
    assert time.monotonic() - began < 30
