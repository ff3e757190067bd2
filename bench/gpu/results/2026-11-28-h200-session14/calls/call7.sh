#!/usr/bin/env bash
# Fourteenth session, call 7: ef21896 (the skinny tensor-core GEMM for products of 9-64 rows).
# The model-side tests (model_ops_gpu_test, model_gpu_test in three processes,
# engine_gpu_test, the four PyTorch comparisons, the smoke) side by side; then e2e --quick with
# NSA_SKINNY_GEMM_ROWS=0 (cuBLASLt, as before) against the default, alternating x2, and
# both forms' eager stage profiles (--profile); then the full benches (run-all.sh --only bench).
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
b=$here/stage/bin
mkdir -p $out/tests; cat stage/COMMIT > $out/commit.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
long1='Presets/ModelTest.LogitsAndGreedyTokensMatchTheCpuReference/paper_3_layers'
long2='Prompts/LongPrefillTest.LongPromptMatchesTheCpuReference/fla_340m_65569'
( timeout 60 $b/model_ops_gpu_test > $out/tests/model_ops_gpu_test.log 2>&1; el ops $?
  timeout 60 $b/engine_gpu_test > $out/tests/engine_gpu_test.log 2>&1; el engine $? ) &
( timeout 200 $b/model_gpu_test --gtest_filter=$long1 > $out/tests/model_gpu_test-1.log 2>&1; el model1 $? ) &
( timeout 200 $b/model_gpu_test --gtest_filter=$long2 > $out/tests/model_gpu_test-2.log 2>&1; el model2 $? ) &
( timeout 200 $b/model_gpu_test --gtest_filter=-$long1:$long2 > $out/tests/model_gpu_test-3.log 2>&1; el model3 $? ) &
( models=$(mktemp -d)
  for preset in tiny tiny-paper; do
    $b/nsa-model create --preset $preset --out $models/$preset --seed 3 > /dev/null 2>&1
    timeout 90 python3 tests/reference/compare_logits.py --model $models/$preset --logits-tool $here/bench/gpu/nsa-logits-cuda \
      --prompt-len 150 --num-decode 100 --seed 4 --rtol 0.1 > $out/tests/torch_$preset.log 2>&1; el torch-$preset $?
  done
  for preset in fla-340m paper; do
    $b/nsa-model create --preset $preset --num-layers 2 --out $models/$preset --seed 3 --quiet > /dev/null 2>&1
    timeout 150 python3 tests/reference/compare_logits.py --model $models/$preset --logits-tool $here/bench/gpu/nsa-logits-cuda \
      --prompt-len 1100 --num-decode 50 --seed 4 --rtol 0.1 --timeout 900 > $out/tests/torch_$preset.log 2>&1; el torch-$preset $?
  done
  timeout 60 bash bench/gpu/server-smoke.sh $b/nsa-server $here/stage/models/tiny > $out/tests/server_smoke.log 2>&1; el smoke $? ) &
wait; el tests 0
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/tests/*.log; grep -h "FAILED  \]" $out/tests/*.log | head
grep -h "PASS\|FAIL" $out/tests/torch_*.log $out/tests/server_smoke.log | tail -6
for i in 1 2; do
  for v in "cublas:NSA_SKINNY_GEMM_ROWS=0" "skinny:X=1"; do
    env ${v#*:} timeout 60 $b/e2e_decode_bench --quick > $out/e2e-${v%%:*}-$i.md 2>&1
  done
done
for v in "cublas:NSA_SKINNY_GEMM_ROWS=0" "skinny:X=1"; do env ${v#*:} timeout 60 $b/e2e_decode_bench --profile > $out/e2e-profile-${v%%:*}.md 2>&1; done
el e2e 0
timeout 150 bash bench/gpu/run-all.sh $out/final --only bench > $out/run-all-bench.txt 2>&1; el bench $?
for f in $out/e2e-*-?.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
grep -h "stage times" $out/e2e-profile-*.md | cut -c1-400
grep -E "^\| (1 x|8 x|32 x|27 x)" $out/final/e2e_decode_bench.md
for f in $out/tests/*.log; do s=$(stat -c %s $f); [ $s -gt 2000000 ] && { head -c 1000000 $f > $f.head; rm $f; }; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
