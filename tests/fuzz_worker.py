"""A child process that opens files for the fuzz tests: a crash or a hang cannot take pytest down.

Protocol: one JSON request per line on stdin, ``{"kind": "data"|"model", "path": "..."}``, and
one JSON answer per line on stdout: ``{"outcome": "loaded", ...}`` with a summary of what was
loaded, or ``{"outcome": "raised", "type": ..., "deepnet": bool, "message": ...}``.
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


def _summary(kind: str, loaded) -> dict:
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
    import ctypes  # noqa: PLC0415

    ctypes.string_at(0)


def _allocate() -> None:
    bytearray(HEADROOM * 2)


def _hang() -> None:
    import time  # noqa: PLC0415

    time.sleep(3600)


# What the harness must notice: the tests check it does (test_the_harness_sees_...).
SELF_TESTS = {"segfault": _segfault, "allocate": _allocate, "hang": _hang}


def main() -> None:
    """Answer requests until stdin closes."""
    from deepnet.data import load_dataset  # noqa: PLC0415  (imported before the limit is set)
    from deepnet.errors import DeepnetError  # noqa: PLC0415
    from deepnet.model_io import load_model  # noqa: PLC0415

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
            load = load_dataset if kind == "data" else load_model
            loaded = load(request["path"])
            answer = {"outcome": "loaded", **_summary(kind, loaded)}
        except BaseException as exc:  # noqa: BLE001  (reporting every kind is the point)
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
