"""L2 regularisation and inverted dropout as options of the training steps.

They change the cost and the gradients, not the update rule, so they live beside the
optimizer rather than in it: :class:`Regularization` is handed to every step (the generic
one and the Gram path's). The formulas are the course's (:mod:`deepnet.course_tools`):

- L2: the cost gains ``lambd / (2 m) * sum_l ||W_l||_F^2`` and each ``dW_l`` gains
  ``lambd / m * W_l`` (m: the examples of the step, a mini-batch's at mini-batches);
- inverted dropout on the hidden layers (never the input or the output):
  ``A = A * D / keep_prob`` forward and ``dA = dA * D / keep_prob`` backward, with
  ``D = rand(A.shape) < keep_prob`` drawn on the host from ``RandomState([seed, iteration,
  batch])``: the masks depend on those three numbers only, so a resumed run draws the
  same ones. ``keep_prob = 1`` draws nothing and is exactly the plain network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from deepnet.backend import array_namespace
from deepnet.course_tools import host_to_like, l2_cost
from deepnet.course_updates import check_keep_prob, check_lambd, l2_gradient

Array = Any


@dataclass(frozen=True)
class Regularization:
    """``lambd`` (L2, >= 0) and ``keep_prob`` (dropout, in (0, 1]); ``seed`` seeds the masks."""

    lambd: float = 0.0
    keep_prob: float = 1.0
    seed: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "lambd", check_lambd(self.lambd))
        object.__setattr__(self, "keep_prob", check_keep_prob(self.keep_prob))

    @property
    def plain(self) -> bool:
        """True when this changes nothing (no L2, no dropout)."""
        return self.lambd == 0 and self.keep_prob == 1

    def masks(self, sizes: list[int], m: int, iteration: int, batch: int) -> list[np.ndarray]:
        """Host 0/1 masks (bool) for hidden layers of ``sizes`` units over ``m`` examples."""
        if self.keep_prob == 1:
            return []
        rng = np.random.RandomState([self.seed, iteration, batch])
        return [rng.rand(n, m) < self.keep_prob for n in sizes]

    def device_masks(self, parameters: dict[str, Array], like: Array, iteration: int,
                     batch: int) -> list[Array]:  # fmt: skip
        """:meth:`masks` for the hidden layers of ``parameters``, in ``like``'s namespace,
        dtype and device (``like``: n1 x m, the first layer's pre-activation)."""
        host = self.masks(self.hidden_sizes(parameters), like.shape[1], iteration, batch)
        return self.piece_masks(host, slice(None), like)

    def hidden_sizes(self, parameters: dict[str, Array]) -> list[int]:
        """The hidden layers' unit counts (what the masks cover)."""
        return [parameters[f"b{layer}"].shape[0] for layer in range(1, len(parameters) // 2)]

    def piece_masks(self, host: list[np.ndarray], columns: Any, like: Array) -> list[Array]:
        """The columns ``columns`` (host indices or a slice) of host masks from :meth:`masks`,
        in ``like``'s namespace, dtype and device. With a full batch's masks (batch 0) and
        one piece's columns (a file's chunk, an MPI shard): the same numbers the in-memory
        full batch draws for those examples."""
        xp = array_namespace(like)
        return [xp.astype(host_to_like(mask[:, columns], like), like.dtype) for mask in host]

    def add_l2(
        self, parameters: dict[str, Array], grads: dict[str, Array], cost: Array, m: int
    ) -> tuple[dict[str, Array], Array]:
        """The L2 terms, added once to gradients and a cost summed over pieces of the data
        (a file's chunks, MPI shards; ``m`` the examples of all of them): each ``dW_l``
        gains ``lambd / m * W_l`` and the cost ``lambd / (2 m) * sum_l ||W_l||^2``
        (:func:`deepnet.course_tools.l2_cost`). Nothing without L2."""
        if not self.lambd:
            return grads, cost
        grads = {
            k: l2_gradient(g, parameters[k[1:]], self.lambd, m) if k.startswith("dW") else g
            for k, g in grads.items()
        }
        return grads, cost + l2_cost(parameters, self.lambd, m)

    def config(self) -> dict[str, Any]:
        """``{"lambd": .., "keep_prob": ..}`` for model files."""
        return {"lambd": self.lambd, "keep_prob": self.keep_prob}


NONE = Regularization()
