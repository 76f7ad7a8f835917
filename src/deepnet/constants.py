"""The course's fixed facts, defined once: picture shape, classes, file layout, dtypes, layers.

Every module that needs one of these imports it from here (directly or through a module that
re-exports it), so that changing the picture size or the class names is a one-line change.
"""

from __future__ import annotations

IMAGE_SHAPE = (64, 64, 3)  # height, width, RGB channels of one picture
N_FEATURES = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]  # 12288 inputs per picture
CLASS_NAMES = ("non-cat", "cat")  # label 0, label 1
CLASSES = tuple(name.encode() for name in CLASS_NAMES)  # as ``list_classes`` stores them
DTYPES = ("float64", "float32")  # the floating types deepnet trains and saves in
DEFAULT_LAYERS = (N_FEATURES, 20, 7, 5, 1)  # the course's L-layer network
TWO_LAYER_LAYERS = (N_FEATURES, 7, 1)  # the course's two-layer network

# The course's HDF5 layout: one file per split, datasets ``{split}_set_x`` / ``{split}_set_y``.
FILES = {"train": "train_catvnoncat.h5", "test": "test_catvnoncat.h5"}
CLASSES_KEY = "list_classes"
SYNTHETIC_ATTR = "deepnet_synthetic"  # set to True in the files deepnet.synthetic writes
