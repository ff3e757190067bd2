#!/usr/bin/env bash
# The second command for a new user, and what CI runs (.ci/run): installs what is missing,
# builds, and runs every test that needs no GPU. GPU tests carry the CTest label `gpu` and run
# on the GPU machine (bench/gpu).
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/build.sh
ctest --preset release "$@"
