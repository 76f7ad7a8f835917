#!/usr/bin/env bash
# Install deepnet for NVIDIA GPUs into one Python environment: CuPy for CUDA 12 with the CUDA
# pieces it compiles and runs kernels with (NVRTC, the CUDA headers, cuBLAS... as
# cuda-toolkit wheels, so the machine needs no CUDA toolkit), plus the test tools, at the
# exact versions of docker/constraints.txt. The Dockerfile runs it; docker/ci-check.sh runs it
# in a fresh virtualenv on a machine without a GPU, where it installs just the same (~3 GB).
#
# Usage:  docker/install.sh [deps]
#   deps  only the pinned third-party packages (the Dockerfile's cached layer)
# Environment: PYTHON (default python3: give a virtualenv's python), DEEPNET_EXTRAS (default
# cuda12,test).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
python="${PYTHON:-python3}"
extras="${DEEPNET_EXTRAS:-cuda12,test}"
# As an environment variable the pins also bind pip's isolated build of deepnet itself.
export PIP_CONSTRAINT="$here/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ "${1:-}" = deps ]; then
  "$python" -m pip install --requirement "$here/constraints.txt"
else
  "$python" -m pip install "$repo[$extras]"
fi
