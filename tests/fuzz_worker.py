"""A child process that opens files for the fuzz tests: a crash or a hang cannot take pytest down.

Protocol: one JSON request per line on stdin, ``{"kind": K, "path": "..."}`` where K is "data"
(load a folder with deepnet.data), "stream" (open one file with the streaming reader,
deepnet.hdf5_rows, and read every row) or "model"; one JSON answer per line on stdout:
``{"outcome": "loaded", ...}`` with a summary of what was loaded, or
``{"outcome": "raised", "type": ..., "deepnet": bool, "message": ...}``.
A segfault shows up in the parent as a dead process, a hang as a missing answer (the parent
times out), and an allocation beyond the address-space limit set here as a MemoryError answer.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import traceback

HEADROOM = 1 << 29  # what one load may allocate beyond the imports: far more than a good file


def _address_space() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


STREAM_BATCH = 256  # rows per read: a fuzzed file has a few, so one read sees all labels


def load_stream(path: str) -> dict:
    """Open ``path`` as ``deepnet train --stream`` does and read every row, last batch first."""
    import numpy as np

    from deepnet.constants import IMAGE_SHAPE
    from deepnet.hdf5_rows import RowReader, open_course_file

    source = open_course_file(path, "train_set_x", "train_set_y", image_shape=IMAGE_SHAPE)
    low, high, labels = 255, 0, set()
    with RowReader(source, min(STREAM_BATCH, source.m)) as reader:
        for start in reversed(range(0, source.m, STREAM_BATCH)):
            idx = np.arange(start, min(source.m, start + STREAM_BATCH))[::-1]
            rows = np.empty((len(idx), source.n_x), np.uint8)
            labels |= {float(v) for v in reader.read(idx, rows)}
            low, high = min(low, int(rows.min())), max(high, int(rows.max()))
    return {"m": source.m, "n_x": source.n_x, "x_range": [low / 255, high / 255],
            "labels": sorted(labels), "classes": list(source.classes)}  # fmt: skip


def _summary(kind: str, loaded) -> dict:
    if kind == "stream":
        return loaded
    if kind == "data":
        return {
            "train_x": list(loaded.train_x.shape),
            "train_y": list(loaded.train_y.shape),
            "x_range": [float(loaded.train_x.min()), float(loaded.train_x.max())],
            "labels": sorted({float(v) for v in loaded.train_y.ravel()}),
            "classes": list(loaded.classes),
        }
    shapes = {k: list(v.shape) for k, v in loaded.parameters.items()}
    finite = all(bool((abs(v) < float("inf")).all()) for v in loaded.parameters.values())
    return {"layer_dims": loaded.layer_dims, "shapes": shapes, "finite": finite}


def _segfault() -> None:
    import ctypes

    ctypes.string_at(0)


def _allocate() -> None:
    bytearray(HEADROOM * 2)


def _hang() -> None:
    import time

    time.sleep(3600)


# What the harness must notice: the tests check it does (test_the_harness_sees_...).
SELF_TESTS = {"segfault": _segfault, "allocate": _allocate, "hang": _hang}


def main() -> None:
    """Answer requests until stdin closes."""
    from deepnet.data import load_dataset  # (imported before the limit is set)
    from deepnet.errors import DeepnetError
    from deepnet.hdf5_rows import RowReader  # noqa: F401  (imported before the limit)
    from deepnet.model_io import load_model

    if sys.platform.startswith("linux") and os.environ.get("DEEPNET_FUZZ_NO_LIMIT") != "1":
        limit = _address_space() + HEADROOM
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash is reported, not dumped
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        kind = request["kind"]
        loaded = None
        try:
            if kind in SELF_TESTS:
                SELF_TESTS[kind]()
            load = {"data": load_dataset, "stream": load_stream}.get(kind, load_model)
            loaded = load(request["path"])
            answer = {"outcome": "loaded", **_summary(kind, loaded)}
        except BaseException as exc:  # (reporting every kind is the point)
            answer = {
                "outcome": "raised",
                "type": type(exc).__name__,
                "deepnet": isinstance(exc, DeepnetError),
                "message": str(exc)[:2000],
                "message_length": len(str(exc)),
                "traceback": "" if isinstance(exc, DeepnetError) else traceback.format_exc(),
            }
        loaded = None  # free this load's arrays before the next one
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
