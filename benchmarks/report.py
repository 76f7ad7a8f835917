"""Turn one benchmark run's JSON into the Markdown tables of docs/benchmarks.md.

    python benchmarks/report.py bench.json > tables.md

Every benchmark in the file lands in a table: the known groups in their own tables (training
step, whole runs, layouts, Gram set-up, predict, kernels, validation overhead, MPI ranks,
training from a file), anything else (a new suite, a GPU row of a CPU-only table) in a last
table of fastest and median times. The scaling suite's benchmarks have no group; they are
grouped by test.

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


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.3g}" if seconds < 1 else f"{seconds * 1e3:,.0f}"


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def _test_name(b: dict) -> str:
    """The test function's name without ``test_`` and parameters: ``stream_epoch``."""
    return b["name"].split("[")[0].removeprefix("test_")


def _row_key(b: dict) -> str:
    params = b.get("params") or {}
    if "layout" in params:
        return f"{params['layout']}-{params.get('device', 'cpu')}"
    key = params.get("impl") or params.get("device")
    return key if key else b["name"]


def load(path: str) -> dict:
    """The run's JSON; ``groups`` maps each group (or test, where none) to its rows by key."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"{path} is not a pytest-benchmark JSON file (no 'benchmarks' list)")
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for b in data["benchmarks"]:
        group, key = b.get("group") or _test_name(b), _row_key(b)
        if key in groups[group]:
            key = b["name"]
        groups[group][key] = b
    data["groups"] = groups
    return data


def best(b: dict | None) -> float | None:
    """Fastest round, in seconds."""
    return None if b is None else b["stats"]["min"]


def _examples_per_s(b: dict) -> float | None:
    examples = b.get("extra_info", {}).get("examples")
    return None if not examples or not best(b) else examples / best(b)


def peaks(groups: dict) -> dict[str, float]:
    """Measured square-GEMM peak, flop/s, per dtype (CPU)."""
    out = {}
    for dtype in ("float32", "float64"):
        b = groups.get(f"matmul peak {dtype}", {}).get("cpu")
        if b is not None and "gflops" in b.get("extra_info", {}):
            out[dtype] = b["extra_info"]["gflops"] * 1e9
    return out


class Tables:
    """Builds the tables, remembering which rows were shown so that none is left out."""

    def __init__(self, groups: dict) -> None:
        self.groups = groups
        self.shown: set[int] = set()

    def row(self, group: str, key: str) -> dict | None:
        b = self.groups.get(group, {}).get(key)
        if b is not None:
            self.shown.add(id(b))
        return b

    def named(self, prefix: str) -> list[str]:
        return sorted((g for g in self.groups if g.startswith(prefix)), key=_group_order)

    def step(self, peak: dict[str, float]) -> list[str]:
        """One row per (model, batch, dtype, device): deepnet, Gram, peers, with ratios."""
        lines = [
            "| model | m | dtype | device | deepnet ms | gram ms | course ms | torch ms "
            "| deepnet/course | deepnet/torch | gram/torch | floor ms | deepnet/floor |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        pattern = re.compile(r"train_step (\S+) m=(\d+) (\S+)")
        for name in self.named("train_step "):
            match = pattern.fullmatch(name)
            if not match:
                continue
            model, m, dtype = match.group(1), int(match.group(2)), match.group(3)
            devices = sorted({k.rsplit("-", 1)[-1] for k in self.groups[name] if "-" in k})
            for device in devices:
                ours, gram, course, torch = (
                    best(self.row(name, f"{who}-{device}"))
                    for who in ("deepnet", "deepnet_gram", "course", "torch")
                )
                floor = None
                if device == "cpu" and dtype in peak and model in FIRST_WIDTH:
                    floor = 2 * 2 * FIRST_WIDTH[model] * N_X * m / peak[dtype]
                cells = [model, str(m), dtype, device]
                cells += [_ms(t) for t in (ours, gram, course, torch)]
                cells += [_ratio(ours, course), _ratio(ours, torch), _ratio(gram, torch)]
                cells += [_ms(floor), _ratio(ours, floor)]
                lines.append("| " + " | ".join(cells) + " |")
        return lines

    def fit(self) -> list[str]:
        """Whole runs: time, examples/s, ratios and peak memory over X."""
        lines = [
            "| run | dtype | implementation | s | examples/s | vs course | vs torch | peak / X |",
            "|---|---|---|---|---|---|---|---|",
        ]
        order = ["deepnet-cpu", "deepnet_direct-cpu", "course-cpu", "torch-cpu"]
        labels = {
            "deepnet-cpu": "deepnet (L_layer_model)",
            "deepnet_direct-cpu": "deepnet, gram=False",
        }
        for name in self.named("fit "):
            g = self.groups[name]
            course, torch = best(g.get("course-cpu")), best(g.get("torch-cpu"))
            keys = [k for k in order if k in g] + sorted(k for k in g if k not in order)
            for key in keys:
                b = self.row(name, key)
                t, info = best(b), b.get("extra_info", {})
                peak = info.get("peak_over_X")
                lines.append(
                    f"| {name[4:]} ({info.get('data', '?')} data) | {info.get('dtype', '?')} "
                    f"| {labels.get(key, key)} | {t:.2f} | {_rate(_examples_per_s(b))} "
                    f"| {_ratio(t, course)} | {_ratio(t, torch)} "
                    f"| {'-' if peak is None else f'{peak:.2f}'} |"
                )
        return lines

    def simple(self, prefix: str, title: str) -> list[str]:
        """Groups named '<prefix> ...': each row's fastest time and examples/s."""
        lines = [f"| {title} | row | ms | examples/s |", "|---|---|---|---|"]
        for name in self.named(prefix):
            for key in sorted(self.groups[name]):
                b = self.row(name, key)
                lines.append(
                    f"| {name[len(prefix) :].strip()} | {key} | {_ms(best(b))} "
                    f"| {_rate(_examples_per_s(b))} |"
                )
        return lines

    def peak(self) -> list[str]:
        """The square products behind the floor: time and GFLOP/s per dtype and device."""
        lines = ["| dtype | device | n | ms | GFLOP/s |", "|---|---|---|---|---|"]
        for name in self.named("matmul peak"):
            for key in sorted(self.groups[name]):
                b = self.row(name, key)
                info = b.get("extra_info", {})
                gflops = info.get("gflops")
                lines.append(
                    f"| {name[len('matmul peak') :].strip()} | {key} | {info.get('n', '-')} "
                    f"| {_ms(best(b))} | {'-' if gflops is None else f'{gflops:.0f}'} |"
                )
        return lines

    def validation(self) -> list[str]:
        """The input checks' cost as a share of one training step (issue 6: under 2%)."""
        lines = [
            "| device | measured | ms | x one step | x one step, over 2500 iterations |",
            "|---|---|---|---|---|",
        ]
        for name in self.named("validation overhead"):
            device = name[len("validation overhead") :].strip(" ()") or "-"
            for key in sorted(self.groups[name]):
                b = self.row(name, key)
                info = b.get("extra_info", {})
                spread = info.get("ratio_per_step_over_2500_iterations")
                lines.append(
                    f"| {device} | {_test_name(b).replace('_', ' ')} | {_ms(best(b))} "
                    f"| {_share(info.get('ratio_to_one_step'))} | {_share(spread)} |"
                )
        return lines

    def ranks(self) -> list[str]:
        """``mpiexec -n N python -m deepnet.distributed bench``: one row per rank count."""
        lines = [
            "| ranks | threads | examples | run s | compute ms/step | Allreduce ms/step "
            "| step ms/step | examples/s | comm/compute | reduce |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        # Grouped by test name (no group) or as "data-parallel step, <thread setting>".
        groups = self.named("data_parallel_step") + self.named("data-parallel step")
        rows = [(g, self.row(g, k)) for g in groups for k in self.groups[g]]
        for g, b in sorted(rows, key=lambda r: (r[1].get("extra_info", {}).get("ranks", 0), r[0])):
            info = b.get("extra_info", {})
            per_step = info.get("seconds_per_step", {})
            threads = g.split(",", 1)[1].strip() if "," in g else "-"
            lines.append(
                f"| {info.get('ranks', '?')} | {threads} | {info.get('m', '?')} | {best(b):.2f} "
                + " ".join(f"| {_ms(per_step.get(k))}" for k in ("compute", "reduce", "step"))
                + f" | {_rate(info.get('examples_per_s'))} | {_share(info.get('comm_to_compute'))}"
                f" | {info.get('reduce', '-')} |"
            )
        return lines

    def stream(self) -> list[str]:
        """One epoch of training read from an HDF5 file, with and without read-ahead."""
        lines = ["| reading | s per epoch (fastest) | median s | rounds |", "|---|---|---|---|"]
        for name in self.named("stream_epoch"):
            for key in sorted(self.groups[name]):
                b = self.row(name, key)
                stats = b["stats"]
                lines.append(
                    f"| {b.get('param', key)} | {stats['min']:.3f} | {stats['median']:.3f} "
                    f"| {stats['rounds']} |"
                )
        return lines

    def others(self) -> list[str]:
        """Every row no table above showed: fastest and median time, rounds."""
        lines = ["| group | benchmark | min ms | median ms | rounds |", "|---|---|---|---|---|"]
        for name in sorted(self.groups, key=_group_order):
            for b in self.groups[name].values():
                if id(b) not in self.shown:
                    stats = b["stats"]
                    lines.append(
                        f"| {name} | {b['name']} | {_ms(stats['min'])} | {_ms(stats['median'])} "
                        f"| {stats['rounds']} |"
                    )
        return lines


def _share(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2%}" if x >= 1e-4 else f"{x * 100:.1e}%"


def _group_order(name: str) -> tuple:
    m = re.search(r"m=(\d+)", name)
    return (re.sub(r"m=\d+", "", name), int(m.group(1)) if m else 0)


def sections(tables: Tables, peak: dict[str, float]) -> list[tuple[str, list[str]]]:
    """(title, table lines) for every kind of benchmark, the leftovers last."""
    out = [
        ("Training step", tables.step(peak)),
        ("Whole runs", tables.fit()),
        ("The two wide products by layout of X",
         tables.simple("wide product", "product, batch, dtype")),
        ("Gram path set-up (X.T @ X and W1 @ X, once per run)",
         tables.simple("gram setup", "batch, dtype")),
        ("predict", tables.simple("predict ", "model, batch, dtype")),
        ("Kernels", tables.simple("kernel ", "kernel, batch, dtype")),
        ("Matrix-multiply peak (square GEMM)", tables.peak()),
        ("Input checks against one training step", tables.validation()),
        ("Data-parallel ranks (MPI)", tables.ranks()),
        ("Training from a file", tables.stream()),
    ]  # fmt: skip
    return [*out, ("Other benchmarks", tables.others())]


def render(data: dict) -> str:
    """The Markdown for one loaded run: a heading line, then a table per kind of benchmark."""
    groups = data["groups"]
    peak = peaks(groups)
    info, commit = data.get("machine_info", {}), data.get("commit_info") or {}
    cpu = info.get("cpu", {}).get("brand_raw") or info.get("processor") or "an unknown CPU"
    out = [
        f"Run {data.get('datetime', '?')} on {cpu}, Python {info.get('python_version', '?')}, "
        f"commit {str(commit.get('id') or '?')[:10]}{' (dirty)' if commit.get('dirty') else ''}.",
        "",
        "Matrix-multiply peak (square GEMM, CPU): "
        + (", ".join(f"{d} {p / 1e9:.0f} GFLOP/s" for d, p in peak.items()) or "not measured"),
    ]
    for title, lines in sections(Tables(groups), peak):
        if len(lines) > 2:  # a header and its rule: nothing of this kind in the run
            out += ["", f"### {title}", "", *lines]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    """Print the tables for the JSON file named in argv[0]."""
    if len(argv) != 1:
        print("usage: python benchmarks/report.py BENCH.json", file=sys.stderr)
        return 2
    try:
        data = load(argv[0])
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        print(f"report.py: cannot read {argv[0]}: {exc}", file=sys.stderr)
        return 2
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
