#!/usr/bin/env bash
# Installs what is missing, configures (once) and builds the release preset. Shared by
# deploy/setup.sh and tests/run.sh; quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh

# The CUDA toolkit lives outside PATH on many machines; CUDA is built whenever nvcc exists.
if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi

if [[ ! -f build/build.ninja ]]; then
  cmake --preset release
fi
cmake --build --preset release
