#!/usr/bin/env bash
# Stages diagnostic builds of the decode benches beside stage/ (after bench/gpu/stage.sh): for each
# MASK, nsa_decode_bench and e2e_decode_bench built with -DNSA_DECODE_DIAG=MASK in build-diag-MASK/
# (git-ignored) and copied to stage/diag-MASK/. The mask drops one part of a decode tile's work
# (kernels/cuda/nsa_decode.cu: 1 the page-table reads, 2 the tile's computation, 4 the wait for
# its copies); the outputs are wrong, the times attribute the tile's cost. On the GPU machine:
#   bash bench/gpu/compare.sh OUT --trace 7b:32:65536 main:stage/bin diag1:stage/diag-1 ...
#   bench/gpu/stage-diag.sh MASK...
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { echo "usage: stage-diag.sh MASK..." >&2; exit 2; }
[ -d stage/lib ] || { echo "stage-diag.sh: run bench/gpu/stage.sh first" >&2; exit 2; }
for mask in "$@"; do
  [[ $mask =~ ^[1-7]$ ]] || { echo "stage-diag.sh: a mask is 1-7, not '$mask'" >&2; exit 2; }
done
for mask in "$@"; do
  dir=build-diag-$mask
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNSA_CUDA=ON -DNSA_BUILD_TESTS=OFF \
    -DNSA_BUILD_BENCH=ON "-DCMAKE_CUDA_FLAGS=-DNSA_DECODE_DIAG=$mask" > /dev/null
  ninja -C "$dir" nsa_decode_bench e2e_decode_bench > /dev/null
  mkdir -p "stage/diag-$mask"
  cp "$dir/bench/nsa_decode_bench" "$dir/bench/e2e_decode_bench" "stage/diag-$mask/"
  strip "stage/diag-$mask"/* 2>/dev/null || true
  echo "$(git rev-parse --short HEAD) NSA_DECODE_DIAG=$mask" > "stage/diag-$mask/COMMIT"
  echo "stage/diag-$mask: $(cat "stage/diag-$mask/COMMIT")"
done
