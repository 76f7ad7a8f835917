"""scripts/gpu-check off the GPU: it refuses clearly, and its summary arithmetic is right."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from deepnet.backend import cuda_available

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(cuda_available(), reason="a GPU is usable here: gpu-check would run")
def test_refuses_without_a_gpu_saying_why():
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu-check")],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
    )  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert "no usable CUDA GPU on this machine, so nothing was run" in out.stdout
    assert "CuPy" in out.stdout  # deepnet's own reason follows


def test_counts_from_a_junit_report(gpu_check, tmp_path):
    report = tmp_path / "r.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase name="a"/><testcase name="b"><skipped message="no GPU"/></testcase>'
        '<testcase name="c"><failure message="x"/></testcase>'
        '<testcase name="d"><error message="y"/></testcase><testcase name="e"/>'
        "</testsuite></testsuites>"
    )
    assert gpu_check.count_tests(report) == {"passed": 2, "failed": 1, "errors": 1, "skipped": 1}


def _bench(group, impl, median):
    return {"group": group, "name": f"test_train_step[{impl}]", "params": {"impl": impl},
            "stats": {"median": median}}  # fmt: skip


def test_key_ratios(gpu_check):
    report = {"benchmarks": [
        _bench("train_step 4-layer m=209 float32", "deepnet-cuda", 50e-6),
        _bench("train_step 4-layer m=209 float32", "torch-cuda", 200e-6),
        _bench("train_step 4-layer m=209 float32", "deepnet-cpu", 2e-3),
        _bench("train_step 4-layer m=65536 float32", "deepnet-cuda", 1.2e-3),
        _bench("predict 4-layer m=209 float32", "deepnet-cuda", 1e-5),
    ]}  # fmt: skip
    groups = gpu_check.bench_rows(report)
    assert groups["train_step 4-layer m=209 float32"]["torch-cuda"] == 200e-6
    lines = gpu_check.key_ratios(groups, bandwidth=4.0e12)
    assert "deepnet-cuda / torch-cuda = 0.25  (meets the target <= 0.5)" in lines[0]
    # two reads of X: 2 * 12288 * 65536 * 4 bytes at 4 TB/s = 1.61 ms; 1.2 ms is 0.75 of it
    big = [line for line in lines if "m=65536" in line]
    assert len(big) == 1 and "= 0.75  (meets the target <= 1.5)" in big[0]
    assert not any("predict" in line for line in lines)


def test_peak_bandwidth(gpu_check):
    # an H100 SXM reports a 2619 MHz memory clock on a 5120-bit bus: 3.35 TB/s
    bw = gpu_check.peak_bandwidth({"memoryClockRate": 2_619_000, "memoryBusWidth": 5120})
    assert bw == pytest.approx(3.352e12, rel=1e-3)
    assert gpu_check.peak_bandwidth({}) is None


def test_the_benchmarks_have_the_bandwidth_case(gpu_check):
    """gpu-check's -k cuda selects a float32 train_step at m = 65536: the target is measured."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", "--collect-only", "-q", "-k", "cuda",
         "-p", "no:cacheprovider"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    cases = [line for line in out.stdout.splitlines() if "test_train_step_bandwidth" in line]
    assert any("deepnet-cuda" in c for c in cases) and any("torch-cuda" in c for c in cases)
    bench = ROOT / "benchmarks" / "test_bench_cuda.py"
    group = f"train_step 4-layer m={gpu_check.BANDWIDTH_M} float32"
    assert 'f"train_step 4-layer m={M} float32"' in bench.read_text()
    assert gpu_check._batch(group) == gpu_check.BANDWIDTH_M
