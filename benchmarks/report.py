"""Turn one benchmark run's JSON into the Markdown tables of docs/benchmarks.md.

    python benchmarks/report.py bench.json > tables.md

Times are each case's fastest round (on a shared machine the minimum is the most
repeatable estimate of what the hardware does); every ratio is between rows of the same
run. The "floor" of a training step is the time its two 12288-wide products
(2 x 2 * n1 * 12288 * m flops) would take at the square-GEMM peak measured in that run.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict

N_X = 12288
FIRST_WIDTH = {"4-layer": 20, "2-layer": 7}


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g}" if seconds < 1 else f"{seconds * 1e3:,.0f}"


def _rate(x: float) -> str:
    return f"{x:,.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def load(path: str) -> dict:
    """The run's JSON, benchmarks grouped by their group name."""
    with open(path) as f:
        data = json.load(f)
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for b in data["benchmarks"]:
        key = b["params"].get("impl") or b["params"].get("layout") or b["params"].get("device")
        if "layout" in b["params"]:
            key = f"{b['params']['layout']}-{b['params']['device']}"
        groups[b["group"]][key] = b
    data["groups"] = groups
    return data


def best(b: dict | None) -> float | None:
    """Fastest round, in seconds."""
    return None if b is None else b["stats"]["min"]


def peaks(groups: dict) -> dict[str, float]:
    """Measured square-GEMM peak, flop/s, per dtype (CPU)."""
    out = {}
    for dtype in ("float32", "float64"):
        b = groups.get(f"matmul peak {dtype}", {}).get("cpu")
        if b is not None:
            out[dtype] = b["extra_info"]["gflops"] * 1e9
    return out


def step_table(groups: dict, peak: dict[str, float]) -> list[str]:
    """One row per (model, batch, dtype): deepnet, Gram iteration and peers, with ratios."""
    lines = [
        "| model | m | dtype | deepnet ms | gram ms | course ms | torch ms | deepnet/course "
        "| deepnet/torch | gram/torch | floor ms | deepnet/floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    pattern = re.compile(r"train_step (\S+) m=(\d+) (\S+)")
    for name in sorted(groups, key=_group_order):
        match = pattern.fullmatch(name)
        if not match:
            continue
        model, m, dtype = match.group(1), int(match.group(2)), match.group(3)
        g = groups[name]
        ours, gram = best(g.get("deepnet-cpu")), best(g.get("deepnet_gram-cpu"))
        course, torch = best(g.get("course-cpu")), best(g.get("torch-cpu"))
        floor = 2 * 2 * FIRST_WIDTH[model] * N_X * m / peak[dtype] if dtype in peak else None
        cells = [model, str(m), dtype] + [
            "-" if t is None else _ms(t) for t in (ours, gram, course, torch)
        ]
        cells += [_ratio(ours, course), _ratio(ours, torch), _ratio(gram, torch)]
        cells += ["-" if floor is None else _ms(floor), _ratio(ours, floor)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def fit_table(groups: dict) -> list[str]:
    """Whole runs: time, examples/s, ratios and peak memory over X."""
    lines = [
        "| run | dtype | implementation | s | examples/s | vs course | vs torch | peak / X |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(g for g in groups if g.startswith("fit ")):
        g = groups[name]
        course, torch = best(g.get("course-cpu")), best(g.get("torch-cpu"))
        for impl in ("deepnet-cpu", "deepnet_direct-cpu", "course-cpu", "torch-cpu",
                     "deepnet-cuda", "torch-cuda"):  # fmt: skip
            b = g.get(impl)
            if b is None:
                continue
            t, info = best(b), b["extra_info"]
            peak = info.get("peak_over_X")
            label = {"deepnet-cpu": "deepnet (L_layer_model)",
                     "deepnet_direct-cpu": "deepnet, gram=False"}.get(impl, impl)  # fmt: skip
            lines.append(
                f"| {name[4:]} ({info['data']} data) | {info['dtype']} | {label} | {t:.2f} "
                f"| {_rate(info['examples'] / t)} | {_ratio(t, course)} | {_ratio(t, torch)} "
                f"| {'-' if peak is None else f'{peak:.2f}'} |"
            )
    return lines


def simple_table(groups: dict, prefix: str, title: str) -> list[str]:
    """Groups named '<prefix> ...': each row's fastest time and examples/s."""
    lines = [f"| {title} | row | ms | examples/s |", "|---|---|---|---|"]
    for name in sorted((g for g in groups if g.startswith(prefix)), key=_group_order):
        for key, b in sorted(groups[name].items()):
            t = best(b)
            lines.append(
                f"| {name[len(prefix) :].strip()} | {key} | {_ms(t)} "
                f"| {_rate(b['extra_info']['examples'] / t)} |"
            )
    return lines


def _group_order(name: str) -> tuple:
    m = re.search(r"m=(\d+)", name)
    return (re.sub(r"m=\d+", "", name), int(m.group(1)) if m else 0)


def main(argv: list[str]) -> int:
    """Print the tables for the JSON file named in argv[0]."""
    data = load(argv[0])
    groups = data["groups"]
    peak = peaks(groups)
    info = data["machine_info"]
    out = [
        f"Run {data['datetime']} on {info['cpu'].get('brand_raw', info['processor'])}, "
        f"Python {info['python_version']}, commit {data['commit_info'].get('id', '?')[:10]}"
        f"{' (dirty)' if data['commit_info'].get('dirty') else ''}.",
        "",
        "Matrix-multiply peak (square GEMM, CPU): "
        + ", ".join(f"{d} {p / 1e9:.0f} GFLOP/s" for d, p in peak.items()),
        "",
        "### Training step",
        "",
        *step_table(groups, peak),
        "",
        "### Whole runs",
        "",
        *fit_table(groups),
        "",
        "### The two wide products by layout of X",
        "",
        *simple_table(groups, "wide product", "product, batch, dtype"),
        "",
        "### Gram path set-up (X.T @ X and W1 @ X, once per run)",
        "",
        *simple_table(groups, "gram setup", "batch, dtype"),
        "",
        "### predict",
        "",
        *simple_table(groups, "predict", "model, batch, dtype"),
        "",
        "### Kernels",
        "",
        *simple_table(groups, "kernel", "kernel, batch, dtype"),
    ]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
