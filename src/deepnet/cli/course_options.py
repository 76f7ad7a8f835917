"""``deepnet train``'s options from the second course: optimizer, decay, L2, dropout, early
stopping (:class:`deepnet.training.TrainingOptions`; checked by :mod:`deepnet.settings`)."""

from __future__ import annotations

import argparse
from typing import Any

from deepnet.optimizers import OPTIMIZERS


class GivenTrue(argparse.Action):
    """A flag that stores True and notes that the command line gave it (``--resume`` checks)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, True)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def add_course_options(train: argparse.ArgumentParser, given: type[argparse.Action]) -> None:
    """Add the options to ``deepnet train``'s parser (``given``: the parser's noting action)."""
    group = train.add_argument_group(
        "optimizer and regularisation (the second course; defaults: plain gradient descent)"
    )
    group.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default="gd",
        action=given,
        help="gd, momentum or adam (default: gd)",
    )
    group.add_argument("--beta", type=float, action=given, help="momentum's beta (default 0.9)")
    group.add_argument("--beta1", type=float, action=given, help="Adam's beta1 (default 0.9)")
    group.add_argument("--beta2", type=float, action=given, help="Adam's beta2 (default 0.999)")
    group.add_argument("--epsilon", type=float, action=given, help="Adam's epsilon (default 1e-8)")
    group.add_argument(
        "--decay-rate",
        type=float,
        action=given,
        metavar="R",
        help="learning rate lr / (1 + R * iteration) (the course's update_lr) (default: no decay)",
    )
    group.add_argument(
        "--decay-interval",
        type=float,
        action=given,
        metavar="N",
        help="with --decay-rate: decay by steps of N iterations (schedule_lr_decay) "
        "(default: every iteration)",
    )
    group.add_argument(
        "--lambd",
        type=float,
        action=given,
        metavar="L",
        help="L2 regularisation strength (default 0: none)",
    )
    group.add_argument(
        "--keep-prob",
        type=float,
        action=given,
        metavar="P",
        help="inverted dropout on the hidden layers, keeping each unit with "
        "probability P (default 1: none)",
    )
    group.add_argument(
        "--early-stopping",
        action=GivenTrue,
        help="hold out --validation-fraction of the training set; stop when its "
        "accuracy stops improving, keep the best parameters (data in memory: not with "
        "--stream or --distributed)",
    )
    group.add_argument(
        "--validation-fraction",
        type=float,
        action=given,
        metavar="F",
        help="with --early-stopping (default 0.1)",
    )
    group.add_argument(
        "--patience",
        type=int,
        action=given,
        metavar="N",
        help="with --early-stopping: recorded iterations without improvement "
        "before stopping (default 10)",
    )
