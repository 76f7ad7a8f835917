"""Where a ``deepnet train`` run starts from and writes to: fresh or from ``--resume``.

A resumed run takes its settings from the checkpoint (checked as if typed, by
:mod:`deepnet.settings`), refuses options that would change them, and trains on the same
data: in memory the arrays' fingerprint must match, streamed the file's.

Outputs (model, cost curve, checkpoint) are checked together, against each other and the
files the run reads, by :func:`deepnet.paths.check_outputs` before any work. The command
line decides where a run writes; the paths a checkpoint recorded are only defaults for the
options left out, and are checked the same way.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepnet.checkpoint import Checkpoint, fingerprint, load_checkpoint
from deepnet.cli.common import check_readable, data_files
from deepnet.data import ENV_VAR, Dataset, load_cat_data
from deepnet.errors import InputError
from deepnet.paths import CheckpointLock, Output, check_outputs, deepnet_file_kind, safe_text
from deepnet.settings import TrainSettings, checkpoint_settings, conflicting_setting
from deepnet.training import TrainState

DEFAULT_OUT = Path("runs") / "model.npz"


def default_checkpoint(out: Path) -> Path:
    """Where a run's checkpoint goes by default: beside its model, ``NAME.ckpt.npz``."""
    return out.with_name(out.stem + ".ckpt.npz")


@dataclass
class Resume:
    """A checkpoint to continue, with its settings checked as if typed on the command line."""

    path: Path
    checkpoint: Checkpoint
    settings: TrainSettings

    @property
    def state(self) -> TrainState:
        """Where the run stopped: host parameters, costs, next iteration, source state."""
        point = self.checkpoint
        return TrainState(point.parameters, point.costs, point.iteration, resume=point.resume)


def existing_resume_path(args: argparse.Namespace) -> Path:
    """:func:`resume_path`, which must be a file: else one line saying how to name it."""
    path = resume_path(args)
    if not path.is_file():
        raise InputError(
            f"no checkpoint at {safe_text(path)} to resume; give its path: "
            "deepnet train --resume PATH"
        )
    return path


def resume_point(args: argparse.Namespace) -> Resume:
    """The checkpoint ``--resume`` names (default: ``--checkpoint``'s, else beside ``--out``)."""
    path = existing_resume_path(args)
    checkpoint = load_checkpoint(path)
    settings = checkpoint_settings(checkpoint, path)
    given = {dest: getattr(args, dest) for dest in getattr(args, "given", set())}
    conflicting_setting(given, settings, path)
    return Resume(path, checkpoint, settings)


def file_fingerprint(path: Path) -> str:
    """A streamed file's identity: its size and the SHA-256 of its first and last MiB."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as handle:
        digest.update(repr(size).encode())
        digest.update(handle.read(1 << 20))
        handle.seek(max(0, size - (1 << 20)))
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()


def check_same_data(resume: Resume, digest: str, source: str) -> None:
    """Refuse to continue a run on other data than it started on."""
    recorded = resume.checkpoint.data
    if digest != recorded["fingerprint"]:
        raise InputError(
            f"{resume.path} was trained on other data ({recorded.get('source', 'unknown')}) "
            f"than {source}: resume it on the same data (--data DIR, --synthetic or --stream)"
        )


def resume_data(args: argparse.Namespace, resume: Resume) -> Dataset:
    """The data the checkpoint was trained on (or the one asked for), checked to be the same."""
    recorded = resume.checkpoint.data
    if args.data is not None or args.synthetic:
        data = load_cat_data(args.data, synthetic=args.synthetic)
    elif recorded.get("synthetic") is True:
        data = load_cat_data(synthetic=True)
    elif isinstance(recorded.get("folder"), str):
        data = load_cat_data(recorded["folder"])
    else:
        raise InputError(f"{resume.path} does not say where its data is: pass --data DIR")
    check_same_data(resume, fingerprint(data.train_x, data.train_y), data.source)
    return data


def stream_path(args: argparse.Namespace, resume: Resume | None) -> Path | None:
    """The file a streamed run reads: ``--stream``, else the one its checkpoint recorded."""
    if args.stream:
        return Path(args.stream)
    if resume is not None and isinstance(resume.checkpoint.data.get("stream"), str):
        return Path(resume.checkpoint.data["stream"])
    return None


def resume_path(args: argparse.Namespace) -> Path:
    """The checkpoint ``--resume`` names (default: ``--checkpoint``'s, else beside ``--out``)."""
    if args.resume:
        return Path(args.resume)
    if args.checkpoint:
        return Path(args.checkpoint)
    usable_name("--out", args.out)
    return default_checkpoint(Path(args.out))


def checkpoint_target(args: argparse.Namespace) -> tuple[str, str]:
    """The checkpoint this run writes, as (option label, path as given): ``--checkpoint``,
    else the checkpoint it resumes, else beside ``--out`` (whose name is checked first)."""
    if args.checkpoint is not None:
        return "--checkpoint", args.checkpoint
    if args.resume:
        return "--resume", args.resume
    usable_name("--out", args.out)
    return "--checkpoint (beside --out)", str(default_checkpoint(Path(args.out)))


def usable_name(label: str, given: str) -> None:
    """Refuse, as check_outputs would, an output name another is derived from ("", "dir/")."""
    if not given.strip() or given.endswith(("/", os.sep)) or Path(given).name in ("", ".", ".."):
        check_outputs({label: (given, "model")})


def refuse_non_checkpoint(args: argparse.Namespace) -> None:
    """Before locking anything: ``--resume`` must name a checkpoint (the loader says why not)."""
    path = existing_resume_path(args)
    try:
        kind = deepnet_file_kind(path)
    except OSError:
        kind = None
    if kind != "checkpoint":
        load_checkpoint(path)  # raises ModelFileError naming what the file is instead


def lock_checkpoint(args: argparse.Namespace) -> CheckpointLock:
    """A resumed run's checkpoint, checked as an output and locked before it is read."""
    label, given = checkpoint_target(args)
    return CheckpointLock(check_outputs({label: (given, "checkpoint")})[label].path).acquire()


def training_inputs(
    args: argparse.Namespace, resume: Resume | None, stream: Path | None
) -> dict[str, Path]:
    """The files this run reads (data, the checkpoint it resumes), by role, checked to be
    readable regular files: no output may be one of them."""
    if stream is not None:
        check_readable(stream, "the streamed training data")
        inputs = {"the training data (--stream)": stream}
    elif args.data is not None or args.synthetic:
        inputs = data_files(args.data, args.synthetic, "--data")
    elif resume is not None and resume.checkpoint.data.get("synthetic") is True:
        inputs = data_files(None, True, "")
    elif resume is not None and isinstance(resume.checkpoint.data.get("folder"), str):
        inputs = data_files(resume.checkpoint.data["folder"], False, "the checkpoint's folder")
    else:
        inputs = data_files(None, False, ENV_VAR)
    if resume is not None:
        inputs["the checkpoint to resume"] = resume.path
    return inputs


def train_outputs(
    args: argparse.Namespace,
    resume: Resume | None,
    checkpoint: tuple[str, str],
    inputs: dict[str, Path],
) -> dict[str, Output]:
    """The model, cost-curve and checkpoint outputs (keys "out", "plot", "checkpoint"),
    checked together before any work: :func:`deepnet.paths.check_outputs`.

    The command line decides: a resumed run writes where ``--out``/``--plot`` say. Paths
    recorded in the checkpoint are only defaults for options left out, and go through the
    same checks (collisions, inputs, files deepnet did not write).
    """
    given = getattr(args, "given", set())
    stored: dict[str, Any] = resume.checkpoint.outputs if resume is not None else {}
    if "out" in given or "out" not in stored:
        out_label, out = "--out", str(args.out)
    else:
        out_label, out = "--out (from the checkpoint)", stored["out"]
    if args.plot is not None:
        plot_label, plot = "--plot", args.plot
    elif out_label == "--out" or "plot" not in stored:
        plot_label = f"--plot (beside {out_label})"
        usable_name(out_label, out)
        plot = str(Path(out).with_name(Path(out).stem + "-costs.png"))
    else:
        plot_label, plot = "--plot (from the checkpoint)", stored["plot"]
    ckpt_label, ckpt = checkpoint
    resumed = inputs.get("the checkpoint to resume")
    if resumed is not None and os.path.realpath(resumed) == os.path.realpath(ckpt):
        inputs = {k: v for k, v in inputs.items() if k != "the checkpoint to resume"}
    checked = check_outputs(
        {out_label: (out, "model"), plot_label: (plot, "png"), ckpt_label: (ckpt, "checkpoint")},
        inputs,
    )
    return dict(zip(("out", "plot", "checkpoint"), checked.values(), strict=True))
