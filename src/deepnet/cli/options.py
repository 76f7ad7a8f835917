"""``deepnet train``'s run length, checkpoint and Gram options: checked, made unambiguous,
and turned into the loop's keyword options.

The run's length is counted in iterations at full batch (``--iterations``, one step over
every example) and in epochs with ``--batch-size`` (``--epochs``, one pass over the
training set: ceil(m / batch size) steps). Both end up as the settings' ``num_iterations``,
the loop's unit; the words shown say which unit it is.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from deepnet.errors import InputError

DEFAULT_LENGTH = 2500  # iterations at full batch, epochs with --batch-size
DEFAULT_CHECKPOINT_SECONDS = 30.0
GRAM = {"auto": None, "on": True, "off": False}  # --gram: the model functions' gram=


def check_train_options(args: argparse.Namespace) -> None:
    """Refuse ambiguous or impossible combinations; ``--epochs`` N sets the run's length.

    After this, ``args.iterations`` is the run's length in the loop's unit (iterations, or
    epochs for a mini-batch run).
    """
    given = set(getattr(args, "given", set()))
    if {"epochs", "iterations"} <= given:
        raise InputError(
            "give the run's length once: --iterations N (full batch) or --epochs N (passes "
            "over the training set, for --batch-size runs), not both"
        )
    if "iterations" in given and args.batch_size is not None:
        raise InputError(
            "--iterations counts full-batch steps; with --batch-size the run is counted in "
            f"passes over the training set: use --epochs {args.iterations}"
        )
    if args.epochs is not None:
        if args.epochs < 1:
            raise InputError(f"--epochs must be at least 1, got {args.epochs}")
        args.iterations = args.epochs  # a resumed run holds --epochs to its checkpoint's
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise InputError(
            f"--checkpoint-every must be at least 1, got {args.checkpoint_every} (leave it "
            "out for none by count, or --no-checkpoint for none at all)"
        )
    seconds = args.checkpoint_seconds
    if not math.isfinite(seconds) or seconds < 0:
        raise InputError(f"--checkpoint-seconds must be 0 (not by time) or more, got {seconds}")
    if args.no_checkpoint:
        clash = sorted({"checkpoint_every", "checkpoint_seconds"} & given)
        if clash or (args.checkpoint and args.resume is None):
            flags = [f"--{name.replace('_', '-')}" for name in clash] or ["--checkpoint"]
            raise InputError(f"--no-checkpoint writes none: leave out {', '.join(flags)}")


def check_gram(args: argparse.Namespace, in_memory: bool) -> None:
    """``--gram on|off`` picks the path of an in-memory run; other runs have no choice."""
    if args.gram != "auto" and not in_memory:
        raise InputError(
            f"--gram {args.gram} applies to in-memory runs; streamed and --distributed runs "
            "take the step-by-step path: leave --gram out"
        )


def loop_options(args: argparse.Namespace, in_memory: bool) -> dict[str, Any]:
    """The loop's checkpoint timing (and, for an in-memory run, ``gram``) from the options."""
    options: dict[str, Any] = {
        "checkpoint_every": None if args.no_checkpoint else args.checkpoint_every,
        "checkpoint_seconds": 0.0 if args.no_checkpoint else args.checkpoint_seconds,
    }
    if in_memory and args.gram != "auto":
        options["gram"] = GRAM[args.gram]
    return options


def unit(batch_size: int | None) -> str:
    """What one loop iteration is called: an iteration at full batch, an epoch otherwise."""
    return "iteration" if batch_size is None else "epoch"


def length_text(settings: Any, examples: int | None) -> str:
    """The run's length and batching in words, for the ``model:`` line."""
    n = settings.num_iterations
    if settings.batch_size is None:
        return f"{n} iterations, full batch"
    if examples is None:
        return f"{n} epochs of mini-batches of {settings.batch_size}"
    steps = -(-examples // settings.batch_size) if settings.batch_size < examples else 1
    return (
        f"{n} epochs of mini-batches of {settings.batch_size} ({steps} steps per epoch over "
        f"{examples} examples, {n * steps} steps)"
    )
