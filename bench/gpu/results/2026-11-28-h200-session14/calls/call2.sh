#!/usr/bin/env bash
# Fourteenth session, call 2: 352321a (the combine folded into each unit's last task at large
# batches; experiment switches for a wave of selected / score tasks). First its decode-side tests
# (nsa_decode_test runs both combine forms; model_gpu_test in three processes; engine_gpu_test),
# then the variants by environment, alternating x2: quick decode tables, traces of 7b 32 x 64k,
# paper 32 x 64k and 7b 8 x 64k, e2e --quick.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
b=$here/stage/bin
mkdir -p $out/tests; cat stage/COMMIT > $out/commit.txt; nvidia-smi --query-gpu=name,driver_version --format=csv > $out/gpu.txt 2>&1
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
long1='Presets/ModelTest.LogitsAndGreedyTokensMatchTheCpuReference/paper_3_layers'
long2='Prompts/LongPrefillTest.LongPromptMatchesTheCpuReference/fla_340m_65569'
( timeout 120 $b/nsa_decode_test > $out/tests/nsa_decode_test.log 2>&1; el decode $?
  timeout 60 $b/engine_gpu_test > $out/tests/engine_gpu_test.log 2>&1; el engine $? ) &
( timeout 200 $b/model_gpu_test --gtest_filter=$long1 > $out/tests/model_gpu_test-1.log 2>&1; el model1 $? ) &
( timeout 200 $b/model_gpu_test --gtest_filter=$long2 > $out/tests/model_gpu_test-2.log 2>&1; el model2 $? ) &
( timeout 200 $b/model_gpu_test --gtest_filter=-$long1:$long2 > $out/tests/model_gpu_test-3.log 2>&1; el model3 $? ) &
wait; el tests 0
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/tests/*.log; grep -h "FAILED  \]" $out/tests/*.log | head
variants=("nofold:NSA_DECODE_FOLD=0" "fold:X=1" "fold_sel:NSA_DECODE_SEL_WAVE=1" "fold_score:NSA_DECODE_SCORE_WAVE=1"
          "fold_sel_score:NSA_DECODE_SEL_WAVE=1 NSA_DECODE_SCORE_WAVE=1" "foldall:NSA_DECODE_FOLD=1")
for i in 1 2; do
  for v in "${variants[@]}"; do
    name=${v%%:*}; envs=${v#*:}
    env $envs timeout 60 $b/nsa_decode_bench --quick > $out/dbench-$name-$i.md 2>&1
    for s in 7b:32:65536 paper:32:65536 7b:8:65536; do
      env $envs NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=$s timeout 20 $b/nsa_decode_bench > $out/trace-$name-${s//:/-}-$i.txt 2>&1
    done
    env $envs timeout 60 $b/e2e_decode_bench --quick > $out/e2e-$name-$i.md 2>&1
  done
done; el bench 0
for f in $out/dbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';')"; done
for f in $out/e2e-*.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
for f in $out/trace-*-1.txt; do echo "== $(basename $f) $(grep -E "^\| (7b|paper)" $f | cut -d'|' -f2-5)"; grep -E "trace (compressed|score|selected|combine)|merged" $f | cut -c1-112; done
for f in $out/tests/*.log; do s=$(stat -c %s $f); [ $s -gt 2000000 ] && { head -c 1000000 $f > $f.head; rm $f; }; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
