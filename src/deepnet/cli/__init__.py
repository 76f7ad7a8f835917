"""The ``deepnet`` command: train, evaluate, predict, mislabeled, info, make-data (and bench).

Each subcommand is a ``*_command(args) -> int`` function in this package; the library does
the work (settings, scoring, training). Errors print one line on stderr; the exit statuses
are :mod:`deepnet.cli.common`'s rule, the same in every mode.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from deepnet.cli import common
from deepnet.cli.common import Progress, StopRequest
from deepnet.cli.info import bench_command
from deepnet.cli.modes import run_training
from deepnet.cli.parser import build_parser
from deepnet.data import load_cat_data
from deepnet.errors import DeepnetError
from deepnet.settings import train_settings

__all__ = [
    "Progress", "StopRequest", "build_parser", "load_cat_data", "main", "run_training",
    "train_settings",
]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``deepnet`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "bench":  # everything after "bench" belongs to deepnet.bench
            return bench_command(argv[1:])
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except DeepnetError as exc:
        common.error(str(exc))
        return common.exit_status(exc)
    except OSError as exc:
        common.error(common.os_error_line(exc))
        return 1
    except KeyboardInterrupt:
        common.error("interrupted")
        return 130
