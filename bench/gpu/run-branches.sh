#!/usr/bin/env bash
# On the GPU machine, after bench/gpu/stage.sh and bench/gpu/stage-branches.sh here: runs each staged
# branch's decode test, quick decode bench, the 7b 1 x 64k trace and (where staged) its prefill
# test and prefill bench, writing OUT/<branch>/*.log and a short summary last.
#   bench/gpu/run-branches.sh OUT [NAME...]   (NAME: a folder under stage/, default every wip-*)
# NSA_BRANCH_MODEL_TEST=1 adds model_gpu_test, NSA_BRANCH_E2E=1 e2e_decode_bench --quick;
# GTEST_FILTER=-*128k* keeps the kernel tests short.
set -uo pipefail
out=${1:?usage: run-branches.sh OUT [NAME...]}
shift
here=$(cd "$(dirname "$0")/../.." && pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for d in "$here"/stage/wip-*/; do names+=("$(basename "$d")"); done
fi
status=0
for name in "${names[@]}"; do
  dir=$here/stage/$name
  mkdir -p "$out/$name"
  cp "$dir/COMMIT" "$out/$name/commit.txt"
  for t in nsa_decode_test nsa_prefill_test; do
    [ -x "$dir/$t" ] || continue
    timeout 300 "$dir/$t" > "$out/$name/$t.log" 2>&1 || status=1
  done
  # model_gpu_test (the tiny model from stage/models); only with NSA_BRANCH_MODEL_TEST=1 (about
  # two minutes a branch).
  if [ "${NSA_BRANCH_MODEL_TEST:-0}" = 1 ] && [ -x "$dir/model_gpu_test" ]; then
    NSA_TEST_MODEL_DIR=$here/stage/models/tiny timeout 300 "$dir/model_gpu_test" > "$out/$name/model_gpu_test.log" 2>&1 || status=1
  fi
  if [ "${NSA_BRANCH_E2E:-0}" = 1 ] && [ -x "$dir/e2e_decode_bench" ]; then
    timeout 200 "$dir/e2e_decode_bench" --quick > "$out/$name/e2e_decode_bench.md" 2>&1 || status=1
  fi
  timeout 200 "$dir/nsa_decode_bench" --quick > "$out/$name/bench.md" 2>&1 || status=1
  NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=7b:1:65536 timeout 60 "$dir/nsa_decode_bench" > "$out/$name/trace.txt" 2>&1 || status=1
  # Branches with the prefill kernels: their per-kernel prefill times too.
  if [ -x "$dir/nsa_prefill_test" ]; then
    timeout 120 "$dir/nsa_decode_bench" --prefill > "$out/$name/prefill.md" 2>&1 || status=1
  fi
done
for name in "${names[@]}"; do
  echo "== $name $(cat "$out/$name/commit.txt")"
  grep -hE "^\[  (PASSED|FAILED)|tests ran" "$out/$name"/*_test.log 2>/dev/null
  cat "$out/$name/bench.md"
  tail -n 25 "$out/$name/trace.txt"
  grep "^|" "$out/$name/prefill.md" 2>/dev/null
  grep -E "^\| .* x " "$out/$name/e2e_decode_bench.md" 2>/dev/null
done
exit $status
