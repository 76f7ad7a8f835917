"""What deepnet's speed is measured against: the course's own code, and PyTorch.

Used by the pytest-benchmark suites in ``benchmarks/`` and by ``deepnet bench``; not part
of the training library. :func:`course_step` is the course's formulation written plainly,
the way the notebook's student code does it: NumPy only, ``np.dot``, a cache per layer,
``dAL`` from the formula, the gradient of the input layer computed too, then
``update_parameters``. It is deliberately not optimised: it is the baseline.
:class:`TorchStep` is the same network and step written the way a PyTorch user would
(``nn.Linear`` layers, ``BCEWithLogitsLoss``, ``loss.backward()``, ``optim.SGD``).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

# ---- The course's formulation (plain NumPy, float64, full batch) ----------------------


def _sigmoid(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return 1 / (1 + np.exp(-Z)), Z


def _relu(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.maximum(0, Z), Z


def _relu_backward(dA: np.ndarray, cache: np.ndarray) -> np.ndarray:
    dZ = np.array(dA, copy=True)
    dZ[cache <= 0] = 0
    return dZ


def _sigmoid_backward(dA: np.ndarray, cache: np.ndarray) -> np.ndarray:
    s = 1 / (1 + np.exp(-cache))
    return dA * s * (1 - s)


def _linear_activation_forward(A_prev, W, b, activation):
    Z = np.dot(W, A_prev) + b
    A, activation_cache = _sigmoid(Z) if activation == "sigmoid" else _relu(Z)
    return A, ((A_prev, W, b), activation_cache)


def course_forward(X: np.ndarray, parameters: dict) -> tuple[np.ndarray, list]:
    """The course's L_model_forward: (AL, caches)."""
    caches = []
    A = X
    L = len(parameters) // 2
    for layer in range(1, L):
        A, cache = _linear_activation_forward(
            A, parameters["W" + str(layer)], parameters["b" + str(layer)], "relu"
        )
        caches.append(cache)
    AL, cache = _linear_activation_forward(
        A, parameters["W" + str(L)], parameters["b" + str(L)], "sigmoid"
    )
    caches.append(cache)
    return AL, caches


def _compute_cost(AL: np.ndarray, Y: np.ndarray) -> float:
    m = Y.shape[1]
    cost = (1.0 / m) * (-np.dot(Y, np.log(AL).T) - np.dot(1 - Y, np.log(1 - AL).T))
    return np.squeeze(cost)


def _linear_backward(dZ, cache):
    A_prev, W, b = cache
    m = A_prev.shape[1]
    dW = 1.0 / m * np.dot(dZ, A_prev.T)
    db = 1.0 / m * np.sum(dZ, axis=1, keepdims=True)
    dA_prev = np.dot(W.T, dZ)
    return dA_prev, dW, db


def _linear_activation_backward(dA, cache, activation):
    linear_cache, activation_cache = cache
    if activation == "relu":
        dZ = _relu_backward(dA, activation_cache)
    else:
        dZ = _sigmoid_backward(dA, activation_cache)
    return _linear_backward(dZ, linear_cache)


def _L_model_backward(AL, Y, caches):
    grads = {}
    L = len(caches)
    Y = Y.reshape(AL.shape)
    dAL = -(np.divide(Y, AL) - np.divide(1 - Y, 1 - AL))
    current_cache = caches[L - 1]
    grads["dA" + str(L - 1)], grads["dW" + str(L)], grads["db" + str(L)] = (
        _linear_activation_backward(dAL, current_cache, "sigmoid")
    )
    for layer in reversed(range(L - 1)):
        dA = grads["dA" + str(layer + 1)]
        dA_prev, dW, db = _linear_activation_backward(dA, caches[layer], "relu")
        grads["dA" + str(layer)] = dA_prev
        grads["dW" + str(layer + 1)] = dW
        grads["db" + str(layer + 1)] = db
    return grads


def _update_parameters(parameters, grads, learning_rate):
    L = len(parameters) // 2
    for layer in range(L):
        parameters["W" + str(layer + 1)] = (
            parameters["W" + str(layer + 1)] - learning_rate * grads["dW" + str(layer + 1)]
        )
        parameters["b" + str(layer + 1)] = (
            parameters["b" + str(layer + 1)] - learning_rate * grads["db" + str(layer + 1)]
        )
    return parameters


def course_step(
    parameters: dict[str, np.ndarray], X: np.ndarray, Y: np.ndarray, learning_rate: float
) -> tuple[dict[str, np.ndarray], float]:
    """One iteration of the course's L_layer_model loop; returns (new parameters, cost)."""
    AL, caches = course_forward(X, parameters)
    cost = _compute_cost(AL, Y)
    grads = _L_model_backward(AL, Y, caches)
    return _update_parameters(dict(parameters), grads, learning_rate), cost


def course_fit(
    parameters: dict[str, np.ndarray],
    X: np.ndarray,
    Y: np.ndarray,
    learning_rate: float,
    num_iterations: int,
) -> tuple[dict[str, np.ndarray], list[float]]:
    """The course's training loop: costs recorded every 100 iterations."""
    costs = []
    for i in range(num_iterations):
        parameters, cost = course_step(parameters, X, Y, learning_rate)
        if i % 100 == 0:
            costs.append(float(cost))
    return parameters, costs


def course_predict(X: np.ndarray, parameters: dict[str, np.ndarray]) -> np.ndarray:
    """The course's predict, without its print: threshold the probabilities one by one."""
    m = X.shape[1]
    p = np.zeros((1, m))
    probas, _ = course_forward(X, parameters)
    for i in range(probas.shape[1]):
        p[0, i] = 1 if probas[0, i] > 0.5 else 0
    return p


# ---- PyTorch ---------------------------------------------------------------------------


def torch_available() -> bool:
    """True when PyTorch can be imported."""
    return importlib.util.find_spec("torch") is not None


def torch_cuda_available() -> bool:
    """True when PyTorch is installed and sees a CUDA GPU."""
    if not torch_available():
        return False
    import torch

    return bool(torch.cuda.is_available())


class TorchStep:
    """The same network and gradient-descent step in idiomatic PyTorch.

    Starts from the same host parameters as deepnet (course layout: W is (n_out, n_in)),
    takes X as (n_x, m) like the course and feeds PyTorch its native (m, n_x) view.
    """

    def __init__(
        self,
        host_parameters: dict[str, np.ndarray],
        X: np.ndarray,
        Y: np.ndarray,
        learning_rate: float,
        *,
        device: str = "cpu",
        dtype: str = "float32",
    ) -> None:
        import torch

        self.torch = torch
        self.device = "cuda" if device == "cuda" else "cpu"
        tdtype = getattr(torch, dtype)
        L = len(host_parameters) // 2
        layers: list[Any] = []
        for layer in range(1, L + 1):
            W = host_parameters[f"W{layer}"]
            linear = torch.nn.Linear(W.shape[1], W.shape[0], dtype=tdtype, device=self.device)
            with torch.no_grad():
                linear.weight.copy_(torch.as_tensor(W))
                linear.bias.copy_(torch.as_tensor(host_parameters[f"b{layer}"][:, 0]))
            layers.append(linear)
            if layer < L:
                layers.append(torch.nn.ReLU())
        self.model = torch.nn.Sequential(*layers)
        # (n_x, m) -> (m, n_x): a free view when X is column-major, as the course's data are.
        self.X = torch.as_tensor(np.asarray(X, dtype=dtype).T, device=self.device)
        self.Y = torch.as_tensor(np.asarray(Y, dtype=dtype).T, device=self.device)
        self.loss = torch.nn.BCEWithLogitsLoss()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=learning_rate)

    def __call__(self) -> Any:
        """One step: forward, cost, backward, update. Returns the cost tensor (before the step)."""
        self.optimizer.zero_grad(set_to_none=True)
        cost = self.loss(self.model(self.X), self.Y)
        cost.backward()
        self.optimizer.step()
        return cost.detach()

    def predict(self) -> Any:
        """0/1 predictions for X, as the course's predict does."""
        with self.torch.no_grad():
            return (self.torch.sigmoid(self.model(self.X)) > 0.5).to(self.X.dtype)

    def synchronize(self) -> None:
        """Wait for queued GPU work (no-op on the CPU)."""
        if self.device == "cuda":
            self.torch.cuda.synchronize()
