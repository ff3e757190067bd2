#!/usr/bin/env bash
# Stages the GPU binaries and the shared libraries they need into stage/ (git-ignored) for the
# GPU machine: build here (deploy/build.sh), then run there with bench/gpu/run-all.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf stage && mkdir -p stage/bin
cp build/tests/nsa_decode_test build/tests/kv_write_test build/bench/nsa_decode_bench stage/bin/
../shared/tools/bundle-libs stage/lib stage/bin/*
du -sh stage
