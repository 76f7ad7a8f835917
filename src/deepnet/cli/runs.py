"""Where a ``deepnet train`` run starts from and writes to: fresh or from ``--resume``.

A resumed run takes its settings from the checkpoint (checked as if typed, by
:mod:`deepnet.settings`), refuses options that would change them, and trains on the same
data: in memory the arrays' fingerprint must match, streamed the file's.
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepnet.checkpoint import Checkpoint, fingerprint, load_checkpoint
from deepnet.data import Dataset, load_cat_data
from deepnet.errors import InputError
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


def resume_point(args: argparse.Namespace) -> Resume:
    """The checkpoint ``--resume`` names (default: ``--checkpoint``'s, else beside ``--out``)."""
    if args.resume:
        path = Path(args.resume)
    else:
        path = Path(args.checkpoint) if args.checkpoint else default_checkpoint(Path(args.out))
    if not path.is_file():
        raise InputError(
            f"no checkpoint at {path} to resume; give its path: deepnet train --resume PATH"
        )
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


def train_paths(args: argparse.Namespace, resume: Resume | None) -> tuple[Path, Path, Path]:
    """The model, cost-curve and checkpoint paths; a resumed run keeps its own unless told."""
    given = getattr(args, "given", set())
    stored: dict[str, Any] = resume.checkpoint.outputs if resume is not None else {}
    out = Path(args.out) if "out" in given or "out" not in stored else Path(stored["out"])
    if args.plot:
        plot = Path(args.plot)
    elif "out" in given or "plot" not in stored:
        plot = out.with_name(out.stem + "-costs.png")
    else:
        plot = Path(stored["plot"])
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
    else:
        checkpoint = resume.path if resume is not None else default_checkpoint(out)
    return out, plot, checkpoint
