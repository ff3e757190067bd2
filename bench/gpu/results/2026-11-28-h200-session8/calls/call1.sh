#!/usr/bin/env bash
# Prepared at the end of the seventh session for the next one: main in stage/bin, the branches
# wip-decode-review-fixes (= wip-small-gemm-prefetch + review fixes) and wip-prefill-wgmma (3824cf6 wip-prefill-gated-window merged, the
# wgmma helpers and wgmma_test, the wgmma branches) in stage/wip-*: the gated runs use it. About 500 s: split
# it if the budget asks.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
b=stage/bin; g=stage/wip-prefill-wgmma; p=stage/wip-decode-review-fixes
mkdir -p $out; cp stage/COMMIT $out/main-commit.txt; cp $g/COMMIT $out/gated-commit.txt; cp $p/COMMIT $out/prefetch-commit.txt
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $out/gpu.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
# The wgmma building blocks first (seconds): which descriptor strides wgmma reads.
timeout 30 stage/wip-prefill-wgmma/wgmma_test > $out/wgmma_test.log 2>&1; el wgmma $?; grep -E "relative error|PASSED|FAILED" $out/wgmma_test.log
# The prefetch branch: e2e with and without the prefetch, main beside it; then its tests.
timeout 40 $b/e2e_decode_bench --quick > $out/e2e-main.md 2>&1; el e2e-main $?
timeout 40 $p/e2e_decode_bench --quick > $out/e2e-prefetch.md 2>&1; el e2e-prefetch $?
NSA_SMALL_GEMM_PREFETCH=0 timeout 40 $p/e2e_decode_bench --quick > $out/e2e-prefetch-off.md 2>&1; el e2e-prefetch-off $?
timeout 40 $p/model_ops_gpu_test > $out/prefetch-model_ops_gpu_test.log 2>&1; el prefetch-ops $?
timeout 60 $p/nsa_decode_test > $out/prefetch-nsa_decode_test.log 2>&1; el prefetch-dtest $?
# The gated window: its prefill bench and the window tests, then the whole prefill test of main.
timeout 40 $g/nsa_decode_bench --prefill > $out/gated-prefill-bench.md 2>&1; el gated-bench $?
timeout 120 $g/nsa_prefill_test --gtest_filter='*Window*:-*128k*:*Wgmma*' > $out/gated-nsa_prefill_test-window.log 2>&1; el gated-test $?
timeout 150 $g/model_gpu_test > $out/gated-model_gpu_test.log 2>&1; el gated-model $?
# The wgmma prefill branches (only worth it if wgmma_test passed): their tests, then their bench.
w=stage/wip-prefill-wgmma
timeout 90 $w/nsa_prefill_test --gtest_filter='*Wgmma*:-*128k*' > $out/wgmma-nsa_prefill_test.log 2>&1; el wgmma-test $?
# Their bench columns only if their tests passed (NSA_BENCH_WGMMA=1 adds them).
if grep -q "^\[  PASSED  \]" $out/wgmma-nsa_prefill_test.log && ! grep -q "^\[  FAILED  \]" $out/wgmma-nsa_prefill_test.log; then
  NSA_BENCH_WGMMA=1 timeout 40 $w/nsa_decode_bench --prefill > $out/wgmma-prefill-bench.md 2>&1; el wgmma-bench $?
fi
grep -hE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log
for f in e2e-main e2e-prefetch e2e-prefetch-off; do echo "== $f"; grep -E "^\| [0-9]" $out/$f.md; done
grep "^| " $out/gated-prefill-bench.md | cut -d'|' -f2-6,10
grep "^| " $out/wgmma-prefill-bench.md 2>/dev/null | cut -d'|' -f2-6,11
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
