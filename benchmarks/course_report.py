"""Issue 15's tables, medians with their spread, from a test_bench_course.py JSON.

    python benchmarks/course_report.py course.json [more.json ...] > tables.md

Every figure is a median over the rounds (min-max in brackets); ratios are between runs
that alternated in the same test. The run's BLAS, thread settings and load average head
the output.
"""

from __future__ import annotations

import json
import sys


def _s(x: float) -> str:
    return f"{x:.3g}" if x < 10 else f"{x:,.1f}"


def _spread(d: dict) -> str:
    return f"{_s(d['median'])} ({_s(d['min'])}-{_s(d['max'])})"


def header(data: dict) -> list[str]:
    info = data["machine_info"]
    blas, commit = info.get("blas", {}), data.get("commit_info", {}).get("id", "?")[:7]
    return [
        f"Run {data.get('datetime', '?')}, commit {commit}; "
        f"BLAS {blas.get('library')} {blas.get('version')} ({blas.get('threading_layer')}); "
        f"thread settings {info.get('thread_settings')}; load average at the start "
        f"{info.get('loadavg')}.",
        "",
    ]


def course_runs(benchmarks: list[dict]) -> list[str]:
    rows = ["| dtype | batch | threads | deepnet | deepnet s | PyTorch s | deepnet / PyTorch |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for b in benchmarks:
        if not b["name"].startswith("test_course_run_vs_torch"):
            continue
        e, p = b["extra_info"], b["params"]
        rows.append(
            f"| {e['dtype']} | {'full' if p['batch'] is None else p['batch']} | "
            f"{p['n_threads']} | {p['impl']} | {_spread(e['deepnet_s'])} | "
            f"{_spread(e['torch_s'])} | **{e['ratio']:.2f}x** |"
        )
    return rows


def steps(benchmarks: list[dict]) -> list[str]:
    rows = ["| m | dtype | step | ms | PyTorch ms | / PyTorch | floor ms | / floor | threads |",
            "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for b in benchmarks:
        if not b["name"].startswith("test_step_vs_torch_and_floor"):
            continue
        e, p, st = b["extra_info"], b["params"], b["stats"]
        ms = {"median": st["median"] * 1e3, "min": st["min"] * 1e3, "max": st["max"] * 1e3}
        torch_ms = {k: v * 1e3 for k, v in e["torch_s"].items()}
        rows.append(
            f"| {p['m']} | {p['dtype']} | {p['impl']} | {_spread(ms)} | {_spread(torch_ms)} | "
            f"{e['ratio']:.2f}x | {e['floor_ms']:.3g} | {e['over_floor']:.2f}x | "
            f"{e['blas_threads']} |"
        )
    return rows


def busy(benchmarks: list[dict]) -> list[str]:
    rows = ["| workload | threads | quiet s | busy s | busy / quiet | BLAS threads when busy |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for b in benchmarks:
        if not b["name"].startswith("test_another_process"):
            continue
        e, p, st = b["extra_info"], b["params"], b["stats"]
        busy_s = {"median": st["median"], "min": st["min"], "max": st["max"]}
        rows.append(
            f"| {p['workload']} | {p['policy']} | {_spread(e['quiet_s'])} | {_spread(busy_s)} | "
            f"**{e['busy_over_quiet']:.2f}x** | {e['blas_threads_busy']} |"
        )
    return rows


def main(paths: list[str]) -> None:
    """Print the tables of each JSON file (tables with no rows in a file are left out)."""
    out: list[str] = []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        out += [f"## {path}", "", *header(data)]
        for title, table in (
            ("Course runs, deepnet beside PyTorch", course_runs),
            ("The ordinary step, PyTorch and the GEMM floor", steps),
            ("Another process on the machine", busy),
        ):
            rows = table(data["benchmarks"])
            if len(rows) > 2:
                out += [f"### {title}", "", *rows, ""]
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1:])
