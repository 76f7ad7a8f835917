"""deepnet: the deep learning course's week-4 network on NumPy (CPU) or CuPy (CUDA)."""

from deepnet.backend import (
    array_namespace,
    cuda_available,
    resolve_device,
    synchronize,
    to_device,
    to_numpy,
    use_device,
)
from deepnet.errors import (
    DataError,
    DeepnetError,
    DeviceError,
    DivergenceError,
    InputError,
    ModelFileError,
    ShapeError,
)
from deepnet.initialization import initialize_parameters, initialize_parameters_deep
from deepnet.kernels import (
    L_model_backward,
    L_model_forward,
    accuracy,
    compute_cost,
    linear_activation_backward,
    linear_activation_forward,
    linear_backward,
    linear_forward,
    predict,
    predict_proba,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    update_parameters,
)
from deepnet.training import L_layer_model, two_layer_model


def _version() -> str:
    """The version of the installed distribution that holds this package (whatever its
    name); from a source checkout that is not installed, pyproject.toml's."""
    import importlib.metadata as metadata
    from pathlib import Path

    import tomllib

    for name in metadata.packages_distributions().get(__name__, []):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        with open(pyproject, "rb") as handle:
            return str(tomllib.load(handle)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0+unknown"


__version__ = _version()

__all__ = [
    "DataError",
    "DeepnetError",
    "DeviceError",
    "InputError",
    "L_model_backward",
    "L_layer_model",
    "L_model_forward",
    "ModelFileError",
    "ShapeError",
    "DivergenceError",
    "__version__",
    "accuracy",
    "array_namespace",
    "compute_cost",
    "cuda_available",
    "initialize_parameters",
    "initialize_parameters_deep",
    "linear_activation_backward",
    "linear_activation_forward",
    "linear_backward",
    "linear_forward",
    "predict",
    "predict_proba",
    "relu",
    "relu_backward",
    "resolve_device",
    "sigmoid",
    "sigmoid_backward",
    "synchronize",
    "to_device",
    "two_layer_model",
    "to_numpy",
    "update_parameters",
    "use_device",
]

# The second course's tools ("Improving Deep Neural Networks"): issue 11's functional API.
from deepnet.course_tools import (  # noqa: E402
    L_model_backward_with_dropout,
    L_model_backward_with_regularization,
    L_model_forward_with_dropout,
    compute_cost_with_regularization,
    initialize_parameters_he,
    initialize_parameters_random,
    initialize_parameters_zeros,
    random_mini_batches,
)
from deepnet.course_updates import (  # noqa: E402
    initialize_adam,
    initialize_velocity,
    schedule_lr_decay,
    update_lr,
    update_parameters_with_adam,
    update_parameters_with_momentum,
)
from deepnet.gradient_check import (  # noqa: E402
    dictionary_to_vector,
    gradient_check_n,
    gradients_to_vector,
    vector_to_dictionary,
)

__all__ += [
    "L_model_backward_with_dropout",
    "L_model_backward_with_regularization",
    "L_model_forward_with_dropout",
    "compute_cost_with_regularization",
    "dictionary_to_vector",
    "gradient_check_n",
    "gradients_to_vector",
    "initialize_adam",
    "initialize_parameters_he",
    "initialize_parameters_random",
    "initialize_parameters_zeros",
    "initialize_velocity",
    "random_mini_batches",
    "schedule_lr_decay",
    "update_lr",
    "update_parameters_with_adam",
    "update_parameters_with_momentum",
    "vector_to_dictionary",
]

# The same tools through the engine (two_layer_model, L_layer_model, fit, deepnet train).
from deepnet.early_stopping import EarlyStopping  # noqa: E402
from deepnet.optim import GradientDescent  # noqa: E402
from deepnet.optimizers import Adam, Decay, Momentum  # noqa: E402

__all__ += ["Adam", "Decay", "EarlyStopping", "GradientDescent", "Momentum"]
