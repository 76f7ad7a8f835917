"""benchmarks/report.py turns what the benchmark suites really write into tables.

The JSON comes from a short real run of every suite (one cheap case of each benchmark,
the MPI and file-reading scaling cases and an 8192-example ``--big`` case included), so a
change in what a suite records shows up here, not in a user's terminal.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("pytest_benchmark", reason="the benchmark suites need pytest-benchmark")

# One cheap case of each benchmark function (test ids are the parameters, bottom-up).
CASES = [
    "test_kernel and relu-209-float32-cpu",
    "test_kernel and relu-8192-float32-cpu",  # a --big case
    "test_wide_product_layout and forward-209-float32-column-major-cpu",
    "test_matmul_peak and float32-cpu",
    "test_train_step and 2-layer-209-float64- and not torch",  # deepnet, Gram, the course
    "test_gram_setup and 209-float64-cpu",
    "test_predict and 2-layer-209-float64-deepnet-cpu",
    "test_fit_4layer and float64-deepnet-cpu",
    "test_fit_4layer and float64-course-cpu",
    "test_bench_validation",
    "test_data_parallel_step and 1",
    "test_stream_epoch and inline",
]


def _report_module():
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "benchmarks/report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report():
    return _report_module()


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The JSON of a short real run of the benchmark suites, ``--big`` included."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    cmd = [
        sys.executable, "-m", "pytest", "benchmarks", "--benchmark-only", "--big",
        f"--benchmark-json={out}", "--benchmark-min-rounds=1", "--benchmark-max-time=0.01",
        "--e2e-iterations=2", "-o", "addopts=", "-p", "no:cacheprovider", "-q",
        "-k", " or ".join(f"({case})" for case in CASES),
    ]  # fmt: skip
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "DEEPNET_DEVICE": "cpu"}
    env.pop("DEEPNET_DATA", None)  # the synthetic stand-in: the same shapes, quicker to load
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def test_every_benchmark_of_a_real_run_lands_in_a_named_table(report, bench_json: Path):
    data = report.load(str(bench_json))
    names = {b["name"].split("[")[0] for b in data["benchmarks"]}
    expected = {"test_kernel", "test_wide_product_layout", "test_matmul_peak", "test_train_step",
                "test_gram_setup", "test_predict", "test_fit_4layer",
                "test_boundary_checks_once_per_call", "test_dispatch_check_in_every_step",
                "test_stream_epoch"}  # fmt: skip
    assert expected <= names, f"the short run missed {expected - names}"
    assert any(b["group"] is None for b in data["benchmarks"])  # the scaling suite's
    tables = report.Tables(data["groups"])
    titled = dict(report.sections(tables, report.peaks(data["groups"])))
    assert titled.pop("Other benchmarks")[2:] == [], "a benchmark without a table of its own"
    assert {id(b) for b in data["benchmarks"]} == tables.shown


def test_the_report_command_prints_every_table(bench_json: Path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/report.py"), str(bench_json)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for title in ("Training step", "Whole runs", "Kernels", "predict", "Training from a file",
                  "Input checks against one training step", "Matrix-multiply peak"):  # fmt: skip
        assert f"### {title}" in out
    assert "| relu m=8192 float32 | cpu |" in out  # the --big row
    step = next(line for line in out.splitlines() if line.startswith("| 2-layer | 209 |"))
    cells = [c.strip() for c in step.strip("|").split("|")]
    assert cells[3] == "cpu" and all(cells[4:7]) and cells[4] != "-" and cells[6] != "-"
    if any(b["group"] is None and "ranks" in b["params"] for b in _benchmarks(bench_json)):
        assert "### Data-parallel ranks (MPI)" in out


def _benchmarks(path: Path) -> list[dict]:
    return json.loads(path.read_text())["benchmarks"]


def test_an_unknown_group_goes_to_the_other_table(report, bench_json: Path, tmp_path: Path):
    data = json.loads(bench_json.read_text())
    stranger = dict(data["benchmarks"][0], group="a new suite m=64", name="test_new[x]")
    data["benchmarks"].append(stranger)
    path = tmp_path / "more.json"
    path.write_text(json.dumps(data))
    out = report.render(report.load(str(path)))
    other = out[out.index("### Other benchmarks") :]
    assert "| a new suite m=64 | test_new[x] |" in other


def test_a_file_that_is_not_benchmark_json_is_refused(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"something": 1}')
    for argv in ([str(bad)], [str(tmp_path / "missing.json")], []):
        result = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks/report.py"), *argv],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip().count("\n") == 0  # one line
