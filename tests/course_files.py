"""A small data set in the course's layout (random pictures), for the tests that train from
files: ``train_catvnoncat.h5`` and ``test_catvnoncat.h5`` with ``*_set_x``, ``*_set_y`` and
``list_classes``."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from deepnet.data import FILES


def write_data(folder: Path, seed: int = 0, m: int = 16) -> Path:
    """``m`` training and 4 test pictures (uint8, 64x64x3, labels alternating) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for split, count in (("train", m), ("test", 4)):
        with h5py.File(folder / FILES[split], "w") as f:
            pictures = rng.randint(0, 256, (count, 64, 64, 3)).astype(np.uint8)
            f.create_dataset(f"{split}_set_x", data=pictures)
            f.create_dataset(f"{split}_set_y", data=(np.arange(count) % 2).astype(np.int64))
            f.create_dataset("list_classes", data=np.array([b"non-cat", b"cat"]))
    return folder
