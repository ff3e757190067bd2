#!/usr/bin/env bash
# Stages the decode kernel's test and benchmark of other branches beside stage/ (run after
# bench/gpu/stage.sh, which makes stage/ and its libraries): for each BRANCH, checks it out, builds
# the two targets in build/ and copies them to stage/<branch with / as ->/; then checks out the
# branch it started on again and rebuilds. The tree must be clean.
#   bench/gpu/stage-branches.sh BRANCH...
# On the GPU machine: LD_LIBRARY_PATH=stage/lib:/usr/local/cuda/lib64 stage/<name>/nsa_decode_test
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { echo "usage: stage-branches.sh BRANCH..." >&2; exit 2; }
[ -d stage/lib ] || { echo "stage-branches.sh: run bench/gpu/stage.sh first" >&2; exit 2; }
git diff --quiet HEAD -- . ':!stage' || { echo "stage-branches.sh: commit or stash first" >&2; exit 2; }
start=$(git rev-parse --abbrev-ref HEAD)
trap 'git checkout -q "$start" && ninja -C build > /dev/null' EXIT
for branch in "$@"; do
  git checkout -q "$branch"
  ninja -C build tests/nsa_decode_test bench/nsa_decode_bench > /dev/null
  dir=stage/${branch//\//-}
  mkdir -p "$dir"
  cp build/tests/nsa_decode_test build/bench/nsa_decode_bench "$dir/"
  # The other kernel tests and the end-to-end bench come along too (a few MB each).
  for extra in tests/nsa_prefill_test tests/model_gpu_test tests/model_ops_gpu_test bench/e2e_decode_bench; do
    if ninja -C build -t query "$extra" > /dev/null 2>&1; then
      ninja -C build "$extra" > /dev/null && cp "build/$extra" "$dir/"
    fi
  done
  strip "$dir"/* 2>/dev/null || true
  git rev-parse --short HEAD > "$dir/COMMIT"
  echo "$dir: $(cat "$dir/COMMIT")"
done
