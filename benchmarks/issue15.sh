#!/usr/bin/env bash
# Issue 15's measurements in one go (docs/benchmarks.md, "Issue 15's figures").
# usage: benchmarks/issue15.sh OUTDIR [E2E_ITERATIONS]     (needs DEEPNET_DATA for the real data)
# Leave OMP/OPENBLAS/MKL_NUM_THREADS unset: the suites set the thread counts themselves.
set -u
out=${1:?give an output folder}
iters=${2:-500}
mkdir -p "$out"
load() { echo "$(date -u +%H:%M:%S) load $(cut -d' ' -f1-4 /proc/loadavg) $1" | tee -a "$out/load.txt"; }
bench=(python -m pytest -q -p no:cacheprovider benchmarks/test_bench_course.py --benchmark-only)

load "course runs"
timeout 1200 "${bench[@]}" -k "course_run and L_layer_model" --e2e-iterations "$iters" \
    --benchmark-json="$out/course.json" > "$out/course.log" 2>&1
load "ordinary step, BLAS default threads"
timeout 900 "${bench[@]}" -k "step_vs" --benchmark-json="$out/step.json" > "$out/step.log" 2>&1
load "ordinary step, 1 thread"
OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 timeout 900 "${bench[@]}" \
    -k "step_vs and (train_step or two_products)" --benchmark-json="$out/step1.json" \
    > "$out/step1.log" 2>&1
load "another process"
timeout 900 "${bench[@]}" -k "another" --benchmark-json="$out/another.json" > "$out/another.log" 2>&1
load "mpi"
data=$(mktemp -d)
python -m deepnet.cli make-data "$data/train_catvnoncat.h5" --n 8192 > /dev/null
python -m deepnet.cli make-data "$data/test_catvnoncat.h5" --n 64 --prefix test > /dev/null
for round in 1 2 3; do
    for ranks in 1 2; do
        start=$(date +%s.%N)
        timeout 600 mpiexec -n "$ranks" python -m deepnet.cli train --distributed --data "$data" \
            -n 50 --print-every 0 --no-progress --out "$data/r$round-$ranks.npz" \
            | grep "trained in" | sed "s/^/ranks=$ranks round=$round /" | tee -a "$out/mpi.txt"
        echo "ranks=$ranks round=$round wall $(echo "$(date +%s.%N) - $start" | bc) s" \
            | tee -a "$out/mpi.txt"
    done
done
rm -rf "$data"
load "blocked step"
timeout 900 python benchmarks/blocked_compare.py --sizes 209,1024,8192 --rounds 5 | tee "$out/blocked.txt"
load "done"
python benchmarks/course_report.py "$out/course.json" "$out/step.json" "$out/step1.json" \
    "$out/another.json" > "$out/report.md" 2>&1 || true
