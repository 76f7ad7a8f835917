"""The synthetic stand-in: course schema, deterministic, cached, marked synthetic, learnable."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from deepnet import synthetic
from deepnet.data import FILES, N_FEATURES, load_dataset
from deepnet.kernels import accuracy, predict
from deepnet.training import L_layer_model

# sha256 of images + labels: regenerate only with a new synthetic.VERSION (the cache key).
PINNED = {
    "train": "f5e873a2d829e6a6f805261040060a97122b9b3fb02b33cc8d54e0c14c92ee4f",
    "test": "dd49bc498307e189e3a807535f63f9f6a49f94aff2ff27f227df914f3ca1cb22",
}


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic files, generated once for this module."""
    return synthetic.ensure_synthetic(tmp_path_factory.mktemp("synthetic"))


@pytest.mark.parametrize("split", ["train", "test"])
def test_splits_have_the_course_shapes_and_are_deterministic(split: str):
    images, labels = synthetic.make_split(split)
    m, cats = synthetic.SPLITS[split]
    assert images.shape == (m, 64, 64, 3) and images.dtype == np.uint8
    assert labels.shape == (m,) and labels.dtype == np.int64
    assert set(np.unique(labels)) == {0, 1} and labels.sum() == cats
    again_images, again_labels = synthetic.make_split(split)
    np.testing.assert_array_equal(images, again_images)
    np.testing.assert_array_equal(labels, again_labels)
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    assert digest == PINNED[split], "the synthetic pictures changed: bump synthetic.VERSION"
    assert len({img.tobytes() for img in images}) == m  # no two pictures alike


def test_written_files_use_the_course_layout_and_are_marked(synthetic_dir: Path):
    for split, name in FILES.items():
        with h5py.File(synthetic_dir / name) as f:
            assert set(f.keys()) == {f"{split}_set_x", f"{split}_set_y", "list_classes"}
            assert f[f"{split}_set_x"].dtype == np.uint8
            assert f[f"{split}_set_y"].dtype == np.int64
            assert list(f["list_classes"][()]) == [b"non-cat", b"cat"]
            assert f.attrs["deepnet_synthetic"]
    data = load_dataset(synthetic_dir)
    assert data.synthetic is True and data.source.startswith("synthetic")
    assert data.train_x.shape == (N_FEATURES, 209) and data.test_x.shape == (N_FEATURES, 50)
    np.testing.assert_array_equal(data.test_images, synthetic.make_split("test")[0])


def test_same_layout_as_the_real_files(synthetic_dir: Path, real_data_dir: Path):
    for name in FILES.values():
        with h5py.File(synthetic_dir / name) as fake, h5py.File(real_data_dir / name) as real:
            assert set(fake.keys()) == set(real.keys())
            for key in real:
                assert fake[key].shape == real[key].shape, key
                assert fake[key].dtype == real[key].dtype, key


def test_cache_is_reused_and_repaired(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = synthetic.ensure_synthetic()
    assert folder == tmp_path / "deepnet" / f"synthetic-v{synthetic.VERSION}"
    train = folder / FILES["train"]
    stamp = train.stat().st_mtime_ns
    os.utime(train, ns=(stamp - 10**9, stamp - 10**9))
    assert synthetic.ensure_synthetic() == folder
    assert train.stat().st_mtime_ns == stamp - 10**9  # reused, not rewritten
    train.write_bytes(train.read_bytes()[:1000])  # an interrupted copy
    data = synthetic.load_synthetic()
    assert data.synthetic and data.train_x.shape == (N_FEATURES, 209)
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_short_training_run_clearly_beats_chance(synthetic_dir: Path):
    data = load_dataset(synthetic_dir)
    X, X_test = data.train_x.astype(np.float32), data.test_x.astype(np.float32)
    parameters, costs = L_layer_model(
        X, data.train_y, [N_FEATURES, 8, 4, 1], num_iterations=300, dtype="float32"
    )
    majority = max(data.test_y.mean(), 1 - data.test_y.mean())  # 0.66: always saying "cat"
    test_accuracy = accuracy(predict(X_test, None, parameters), data.test_y)
    assert costs[-1] < costs[0] - 0.3
    assert accuracy(predict(X, None, parameters), data.train_y) >= 0.9
    assert test_accuracy >= 0.8 and test_accuracy >= majority + 0.12
