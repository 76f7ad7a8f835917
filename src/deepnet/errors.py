"""deepnet's own exceptions: each message says what was wrong and what to do."""

from __future__ import annotations


class DeepnetError(Exception):
    """Base class of every error deepnet raises on purpose."""


class DeviceError(DeepnetError, RuntimeError):
    """A device was asked for that is unknown or cannot be used here."""


class ShapeError(DeepnetError, ValueError):
    """Arrays whose shapes do not fit the network or each other."""


class InputError(DeepnetError, ValueError):
    """An argument with a wrong value (labels, learning rate, layer sizes, ...)."""


class DataError(DeepnetError, ValueError):
    """A data file that is missing, damaged or not in the course's layout."""


class ModelFileError(DeepnetError, ValueError):
    """A model or checkpoint file that is missing, damaged or not deepnet's."""


class DivergenceError(DeepnetError, FloatingPointError):
    """The cost or the parameters became NaN or infinite during training."""

    def __init__(self, message: str, iteration: int, parameters: dict, costs: list) -> None:
        super().__init__(message)
        self.iteration = iteration
        self.parameters = parameters  # the last finite parameters
        self.costs = costs
