"""A training run's settings, checked once: for ``deepnet train``'s options and for the
settings a checkpoint stores (a resumed run is held to the same rules), plus layer parsing.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepnet.checkpoint import Checkpoint
from deepnet.constants import DEFAULT_LAYERS, N_FEATURES, TWO_LAYER_LAYERS
from deepnet.errors import InputError, ModelFileError
from deepnet.initialization import INITS, check_layer_dims, check_network
from deepnet.spec import activation
from deepnet.training import DTYPES, training_options
from deepnet.validation import check_learning_rate

MODELS = {
    # name: (default layer dims, default initialisation), as in the course's application notebook
    "L-layer": (list(DEFAULT_LAYERS), "lecun"),
    "two-layer": (list(TWO_LAYER_LAYERS), "small"),
}


@dataclass
class TrainSettings:
    """The validated settings of one training run (what ``deepnet train`` was asked to do)."""

    model: str
    layer_dims: list[int]
    learning_rate: float
    num_iterations: int
    dtype: str
    seed: int
    init: str
    batch_size: int | None
    record_every: int
    print_every: int
    hidden: str = "relu"
    # the second course's options (deepnet.training.TrainingOptions); defaults: the course's
    optimizer: str = "gd"
    beta: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    decay_rate: float | None = None
    decay_interval: float | None = None
    lambd: float = 0.0
    keep_prob: float = 1.0
    early_stopping: bool = False
    validation_fraction: float = 0.1
    patience: int = 10

    def training_options(self) -> dict[str, Any]:
        """These settings as :func:`deepnet.training.fit`'s options (optimizer object, lambd,
        keep_prob, early-stopping rule), checked as the model functions check them."""
        options: dict[str, Any] = {"optimizer": self.optimizer, "lambd": self.lambd,
                                   "keep_prob": self.keep_prob}  # fmt: skip
        if self.optimizer == "momentum":
            options["beta"] = self.beta
        if self.optimizer == "adam":
            options |= {"beta1": self.beta1, "beta2": self.beta2, "epsilon": self.epsilon}
        if self.decay_rate is not None or self.decay_interval is not None:
            options |= {"decay_rate": self.decay_rate, "time_interval": self.decay_interval}
        if self.early_stopping:
            options |= {"early_stopping": True, "validation_fraction": self.validation_fraction,
                        "patience": self.patience}  # fmt: skip
        return training_options(self.learning_rate, self.seed, **options)

    @property
    def plain(self) -> bool:
        """True when only the first course's options are used (what every mode runs)."""
        return self.lambd == 0 and self.keep_prob == 1 and not self.early_stopping

    def describe(self) -> str:
        """The second course's options in words, for the run's opening lines ('' if none)."""
        parts = []
        if self.optimizer != "gd":
            parts.append(repr(self.training_options()["optimizer"]))
        elif self.decay_rate is not None:
            every = f" every {self.decay_interval} iterations" if self.decay_interval else ""
            parts.append(f"decay rate {self.decay_rate}{every}")
        if self.lambd:
            parts.append(f"L2 lambd {self.lambd}")
        if self.keep_prob < 1:
            parts.append(f"dropout keep_prob {self.keep_prob}")
        if self.early_stopping:
            parts.append(f"early stopping (validation fraction {self.validation_fraction}, "
                         f"patience {self.patience})")  # fmt: skip
        return "; ".join(parts)

    def as_metadata(self) -> dict[str, Any]:
        """The settings as stored in the model file."""
        fit = self.training_options()
        rule = fit["early_stopping"]
        return {
            "learning_rate": self.learning_rate,
            "num_iterations": self.num_iterations,
            "seed": self.seed,
            "init": self.init,
            "batch_size": self.batch_size,
            "record_every": self.record_every,
            "hidden_activation": self.hidden,
            "optimizer": fit["optimizer"].config(),
            "lambd": self.lambd,
            "keep_prob": self.keep_prob,
            "early_stopping": None if rule is None else rule.config(),
        }


def train_settings(args: Any, *, command_line: bool = True) -> TrainSettings:
    """Check ``deepnet train``'s options (an object with its attributes) and fill in the
    model's defaults. ``command_line``: also refuse options that would be ignored (a
    checkpoint's stored settings hold every value, used or not)."""
    if command_line:
        check_unused_options(args)
    dims, init = MODELS[args.model]
    if args.layers is not None:
        dims = check_layer_dims(parse_layers(args.layers))
    check_learning_rate(args.learning_rate)
    if dims[0] != N_FEATURES or dims[-1] != 1:
        raise InputError(
            f"--layers must start with {N_FEATURES} (64x64x3 inputs per picture) and end with 1 "
            f"(one sigmoid output), got {','.join(map(str, dims))}"
        )
    check_network(dims, args.dtype)  # the memory the sizes imply, before any data is loaded
    if args.model == "two-layer" and len(dims) != 3:
        raise InputError(f"the two-layer model takes --layers {N_FEATURES},N,1, got {dims}")
    for name in ("iterations", "record_every"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError("--batch-size must be at least 1 (leave it out for full batch)")
    if not 0 <= args.seed < 2**32:  # what NumPy's RandomState takes
        raise InputError(f"--seed must be an integer from 0 to 2**32 - 1, got {args.seed}")
    check_print_every(args.print_every, args.record_every)
    hidden = getattr(args, "activation", None) or "relu"
    activation(hidden)
    settings = TrainSettings(
        model=args.model,
        layer_dims=dims,
        learning_rate=args.learning_rate,
        num_iterations=args.iterations,
        dtype=args.dtype,
        seed=args.seed,
        init=args.init or init,
        batch_size=args.batch_size,
        record_every=args.record_every,
        print_every=args.print_every,
        hidden=hidden,
        **{
            name: getattr(args, name)
            for name in SECOND_COURSE
            if getattr(args, name, None) is not None
        },  # fmt: skip
    )
    settings.training_options()  # every hyper-parameter checked now, with the course's messages
    return settings


# Options that only mean something beside another: (option, needs, the value it needs).
DEPENDENT_OPTIONS = [
    ("beta", "optimizer", "momentum"), ("beta1", "optimizer", "adam"),
    ("beta2", "optimizer", "adam"), ("epsilon", "optimizer", "adam"),
    ("validation_fraction", "early_stopping", True), ("patience", "early_stopping", True),
]  # fmt: skip


def check_unused_options(args: Any) -> None:
    """Refuse an option that the others make meaningless (``--beta`` without momentum...):
    it would be silently ignored."""
    for name, needs, value in DEPENDENT_OPTIONS:
        if getattr(args, name, None) is not None and getattr(args, needs, None) != value:
            flag, other = name.replace("_", "-"), needs.replace("_", "-")
            wanted = f"--{other}" if value is True else f"--{other} {value}"
            raise InputError(f"--{flag} applies only with {wanted}; leave it out or add {wanted}")


# The second course's settings, as ``deepnet train`` options of the same name (dashes).
SECOND_COURSE = {
    "optimizer": str, "beta": (int, float), "beta1": (int, float), "beta2": (int, float),
    "epsilon": (int, float), "decay_rate": (int, float, type(None)),
    "decay_interval": (int, float, type(None)), "lambd": (int, float),
    "keep_prob": (int, float), "early_stopping": bool, "validation_fraction": (int, float),
    "patience": int,
}  # fmt: skip


def check_print_every(print_every: int, record_every: int) -> None:
    if print_every < 0 or print_every % record_every:
        raise InputError(
            f"--print-every must be 0 (never) or a multiple of --record-every "
            f"({record_every}), got {print_every}"
        )


def parse_layers(text: str) -> list[int]:
    """``"12288,20,7,5,1"`` -> [12288, 20, 7, 5, 1]; an InputError naming the format if not."""
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise InputError(
            f"--layers takes comma-separated sizes like {N_FEATURES},20,7,5,1, got {text!r}"
        ) from None


# The options that decide a run's result, with the setting each one sets: a resumed run
# takes all of them from its checkpoint, and refuses a command line that asks otherwise.
SETTING_OPTIONS = {
    "model": ("--model", "model"),
    "layers": ("--layers", "layer_dims"),
    "learning_rate": ("--learning-rate", "learning_rate"),
    "iterations": ("--iterations", "num_iterations"),
    "epochs": ("--epochs", "num_iterations"),
    "dtype": ("--dtype", "dtype"),
    "batch_size": ("--batch-size", "batch_size"),
    "seed": ("--seed", "seed"),
    "init": ("--init", "init"),
    "record_every": ("--record-every", "record_every"),
    "activation": ("--activation", "hidden"),
    **{name: (f"--{name.replace('_', '-')}", name) for name in SECOND_COURSE},
}
SETTING_TYPES = {
    "model": str, "layer_dims": list, "learning_rate": (int, float), "num_iterations": int,
    "dtype": str, "seed": int, "init": str, "batch_size": (int, type(None)),
    "record_every": int, "print_every": int,
}  # fmt: skip


def option_text(value: Any) -> str:
    """A setting as the command line writes it."""
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def checkpoint_settings(checkpoint: Checkpoint, path: Path) -> TrainSettings:
    """The stored settings, through the same checks as ``deepnet train``'s options."""
    stored = checkpoint.settings
    for name, kind in SETTING_TYPES.items():
        value = stored.get(name, ...)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ModelFileError(f"{path}: the checkpoint's {name} setting is missing or invalid")
    for name, kind in SECOND_COURSE.items():  # absent from checkpoints of earlier versions
        value = stored.get(name)
        if name in stored and (not isinstance(value, kind) or (
                isinstance(value, bool) and kind is not bool)):  # fmt: skip
            raise ModelFileError(f"{path}: the checkpoint's {name} setting is invalid")
    for name, choices in (("model", MODELS), ("dtype", DTYPES), ("init", INITS)):
        if stored[name] not in choices:
            raise ModelFileError(f"{path}: the checkpoint's {name} {stored[name]!r} is unknown")
    options = argparse.Namespace(
        model=stored["model"],
        layers=",".join(map(str, stored["layer_dims"])),
        learning_rate=stored["learning_rate"],
        iterations=stored["num_iterations"],
        dtype=stored["dtype"],
        seed=stored["seed"],
        init=stored["init"],
        batch_size=stored["batch_size"],
        record_every=stored["record_every"],
        print_every=stored["print_every"],
        activation=stored.get("hidden", "relu"),
        **{name: stored[name] for name in SECOND_COURSE if name in stored},
    )
    try:
        settings = train_settings(options, command_line=False)
    except InputError as exc:
        raise ModelFileError(
            f"{path}: the checkpoint holds settings deepnet refuses: {exc}"
        ) from None
    if (settings.layer_dims, settings.dtype, settings.model, settings.hidden) != (
        checkpoint.layer_dims,
        checkpoint.dtype,
        checkpoint.model,
        checkpoint.hidden,
    ):
        raise ModelFileError(f"{path}: the checkpoint's settings do not match its parameters")
    return settings


def conflicting_setting(given: dict[str, Any], settings: TrainSettings, path: Path) -> None:
    """Refuse options (``dest: value`` as typed) that a resumed run cannot change."""
    for dest in sorted(given.keys() & set(SETTING_OPTIONS)):
        flag, name = SETTING_OPTIONS[dest]
        asked = parse_layers(given[dest]) if dest == "layers" else given[dest]
        stored = getattr(settings, name)
        if asked != stored:
            raise InputError(
                f"{flag} {option_text(asked)} conflicts with the checkpoint's "
                f"{option_text(stored)}: a resumed run keeps the settings it started with "
                f"({path}); leave {flag} out, or start a new run without --resume"
            )
