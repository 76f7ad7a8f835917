"""The GPU check: the CUDA tests and the GPU benchmarks with their peers, then a summary.

Run it as ``scripts/gpu-check`` on a machine with an NVIDIA GPU (or in the CUDA image). It
refuses at once, saying why, where no GPU is usable (exit status 2). Otherwise it runs

1. ``pytest -m cuda tests`` with DEEPNET_DEVICE=cuda: parity with the CPU, the fused step
   and its graphs, streaming to the GPU, the distributed CuPy cases and the reductions;
2. ``pytest benchmarks --benchmark-only -k cuda`` where benchmarks/ exists: deepnet's CUDA
   rows (the captured step and the Gram path) beside PyTorch's CUDA rows when PyTorch sees
   the GPU, and the m = 65536 float32 step of the bandwidth target,

keeps every output in the output folder (default runs/gpu-check: the device line,
nvidia-smi, the test log and JUnit report, the benchmark log and JSON, summary.txt), and
prints the GPU, the test counts and the key ratios: deepnet's CUDA step over PyTorch's, and
over the time the GPU's memory bandwidth allows for reading X twice. Exit status 1 when a
test failed or the benchmarks did not run cleanly, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N_X = 12288  # input features: what the bandwidth floor reads twice per step
STEP_TARGET = 0.5  # deepnet's CUDA step at most this fraction of PyTorch's (m = 209, float32)
BANDWIDTH_TARGET = 1.5  # within this factor of two reads of X (m = 65536, float32)
BANDWIDTH_M = 65536


def gpu_or_exit() -> dict:
    """Facts about the GPU, or exit 2 with deepnet's own reason for not having one."""
    try:
        import deepnet
        from deepnet.backend import cupy_module, gpu_description
    except ImportError as exc:
        sys.exit(f"gpu-check: deepnet is not importable here ({exc}); install it first")
    try:
        deepnet.resolve_device("cuda")
    except deepnet.DeviceError as exc:
        print(f"gpu-check: no usable CUDA GPU on this machine, so nothing was run.\n  {exc}")
        sys.exit(2)
    cp = cupy_module()
    rt = cp.cuda.runtime
    props = rt.getDeviceProperties(cp.cuda.Device().id)
    return {
        "gpu": gpu_description(),
        "cupy": cp.__version__,
        "runtime": _cuda_version(rt.runtimeGetVersion()),
        "driver": _cuda_version(rt.driverGetVersion()),
        "bandwidth": peak_bandwidth(props),
        "path": _fast_path(cp),
    }


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def peak_bandwidth(props: dict) -> float | None:
    """Bytes/s from the memory clock (kHz, double data rate) and bus width (bits)."""
    clock, width = props.get("memoryClockRate"), props.get("memoryBusWidth")
    if not clock or not width:
        return None
    return 2.0 * clock * 1e3 * width / 8


def _fast_path(cp) -> str:
    from deepnet.cuda.dispatch import CudaOps

    blas = CudaOps(cp).blas
    if blas.capturable:
        return "fused kernels, cuBLAS bound directly, CUDA graphs"
    return "fused kernels on CuPy's matmul (no CUDA graphs: cuBLAS could not be bound)"


def run(cmd: list[str], log: Path) -> int:
    """Run ``cmd`` from the repository root, echoing its output and keeping it in ``log``."""
    print("$", " ".join(cmd), flush=True)
    env = dict(os.environ, DEEPNET_DEVICE="cuda")
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for line in proc.stdout:
            sys.stdout.write(line)
            out.write(line)
    return proc.wait()


def count_tests(junit: Path) -> dict[str, int]:
    """passed / failed / errors / skipped from a pytest JUnit XML report."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    if not junit.is_file():
        return counts
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        if "failure" in kinds:
            counts["failed"] += 1
        elif "error" in kinds:
            counts["errors"] += 1
        elif "skipped" in kinds:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts


def _label(bench: dict) -> str:
    params = bench.get("params") or {}
    return str(params.get("impl") or params.get("device") or bench.get("name", "?"))


def bench_rows(report: dict) -> dict[str, dict[str, float]]:
    """{group: {row label: median seconds}} from a pytest-benchmark JSON report."""
    groups: dict[str, dict[str, float]] = {}
    for bench in report.get("benchmarks", []):
        group = bench.get("group") or bench.get("name", "?")
        groups.setdefault(group, {})[_label(bench)] = bench["stats"]["median"]
    return groups


def key_ratios(groups: dict[str, dict[str, float]], bandwidth: float | None) -> list[str]:
    """The issue's two speed targets, as far as the benchmarks measured them."""
    lines = []
    for group, rows in sorted(groups.items()):
        if not group.startswith("train_step") or "deepnet-cuda" not in rows:
            continue
        ours = rows["deepnet-cuda"]
        if "torch-cuda" in rows:
            ratio = ours / rows["torch-cuda"]
            target = ""
            if "4-layer" in group and _batch(group) == 209 and "float32" in group:
                verdict = "meets" if ratio <= STEP_TARGET else "MISSES"
                target = f"  ({verdict} the target <= {STEP_TARGET})"
            lines.append(f"{group}: deepnet-cuda / torch-cuda = {ratio:.2f}{target}")
        m = _batch(group)
        if bandwidth and m and "float32" in group:
            floor = 2 * N_X * m * 4 / bandwidth
            ratio = ours / floor
            target = ""
            if m == BANDWIDTH_M:
                verdict = "meets" if ratio <= BANDWIDTH_TARGET else "MISSES"
                target = f"  ({verdict} the target <= {BANDWIDTH_TARGET})"
            lines.append(
                f"{group}: deepnet-cuda / two reads of X ({floor * 1e6:.1f} us) = {ratio:.2f}"
                f"{target}"
            )
    if lines and not any(f"m={BANDWIDTH_M}" in line for line in lines):
        lines.append(f"(no float32 train_step benchmark at m={BANDWIDTH_M}: target unmeasured)")
    return lines


def _batch(group: str) -> int | None:
    for word in group.split():
        if word.startswith("m=") and word[2:].isdigit():
            return int(word[2:])
    return None


def _time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:8.3f} s "
    if seconds >= 1e-3:
        return f"{seconds * 1e3:8.3f} ms"
    return f"{seconds * 1e6:8.1f} us"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check")
    parser.add_argument("--tests-only", action="store_true", help="skip the benchmarks")
    parser.add_argument("--bench-only", action="store_true", help="skip the tests")
    parser.add_argument("-k", dest="keyword", default="cuda", help="benchmarks to run (-k)")
    parser.add_argument("--big", action="store_true", help="pass --big to the benchmarks")
    args = parser.parse_args(argv)

    facts = gpu_or_exit()
    args.out.mkdir(parents=True, exist_ok=True)
    record_device(args.out, facts)
    started = time.time()
    failed = False

    counts = None
    if not args.bench_only:
        junit = args.out / "cuda-tests.xml"
        code = run(
            [sys.executable, "-m", "pytest", "-m", "cuda", "-rs", "-p", "no:cacheprovider",
             f"--junitxml={junit}", "tests"],
            args.out / "cuda-tests.log",
        )  # fmt: skip
        counts = count_tests(junit)
        failed |= code != 0 or counts["failed"] > 0 or counts["errors"] > 0

    groups: dict[str, dict[str, float]] = {}
    bench_note = "skipped (--tests-only)"
    if not args.tests_only:
        if (ROOT / "benchmarks").is_dir():
            report = args.out / "benchmarks.json"
            cmd = [sys.executable, "-m", "pytest", "benchmarks", "--benchmark-only",
                   "-k", args.keyword, "-rs", "-p", "no:cacheprovider",
                   f"--benchmark-json={report}"]  # fmt: skip
            code = run([*cmd, "--big"] if args.big else cmd, args.out / "benchmarks.log")
            failed |= code not in (0, 5)  # 5: nothing selected
            if report.is_file():
                groups = bench_rows(json.loads(report.read_text()))
            bench_note = f"{sum(map(len, groups.values()))} rows in {len(groups)} groups"
        else:
            bench_note = "benchmarks/ is not in this checkout: none run"

    lines = ["", "== gpu-check summary", f"GPU: {facts['gpu']}"]
    lines.append(
        f"CuPy {facts['cupy']}, CUDA runtime {facts['runtime']}, driver {facts['driver']}, "
        f"Python {platform.python_version()}, PyTorch CUDA peer: {_torch_cuda()}"
    )
    if facts["bandwidth"]:
        lines.append(
            f"peak memory bandwidth (clock x bus width): {facts['bandwidth'] / 1e12:.2f} TB/s"
        )
    lines.append(f"deepnet's CUDA step: {facts['path']}")
    if counts is not None:
        lines.append("CUDA tests: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    lines.append(f"benchmarks: {bench_note}")
    for group, rows in sorted(groups.items()):
        best = min(rows.values())
        lines.append(f"  {group}")
        for label, median in sorted(rows.items(), key=lambda kv: kv[1]):
            lines.append(f"    {label:<24}{_time(median)}  {median / best:6.2f}x")
    ratios = key_ratios(groups, facts["bandwidth"])
    if ratios:
        lines.append("key ratios (medians):")
        lines.extend(f"  {line}" for line in ratios)
    lines.append(f"reports in {args.out} ({time.time() - started:.0f} s)")
    lines.append("gpu-check: FAILED" if failed else "gpu-check: ok")
    text = "\n".join(lines)
    print(text)
    (args.out / "summary.txt").write_text(text.lstrip("\n") + "\n")
    return 1 if failed else 0


def _torch_cuda() -> str:
    """Whether PyTorch's CUDA rows can run here, in words."""
    try:
        import torch
    except ImportError:
        return "not installed (CuPy rows alone)"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no GPU (CuPy rows alone)"
    return f"torch {torch.__version__}, CUDA {torch.version.cuda}"


def record_device(out: Path, facts: dict) -> None:
    """The device line and nvidia-smi's report, kept in ``out``."""
    (out / "device.json").write_text(json.dumps(facts, indent=2) + "\n")
    try:
        smi = subprocess.run(
            ["nvidia-smi", "-q"], capture_output=True, text=True, timeout=60, check=False
        )
        (out / "nvidia-smi.txt").write_text(smi.stdout + smi.stderr)
    except (OSError, subprocess.TimeoutExpired) as exc:
        (out / "nvidia-smi.txt").write_text(f"nvidia-smi not run: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
