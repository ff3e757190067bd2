#!/usr/bin/env bash
# Thirteenth session, call 6 (the last, about 350 s of budget): wip/warp-tiles 4481a25
# (AttendTilesByKeys' warps copy and wait for their own rows: no block barrier between tiles)
# staged whole. Its decode-side tests side by side: nsa_decode_test; model_gpu_test in three
# processes (its two long cases apart); engine_gpu_test; the four PyTorch comparisons; the smoke.
# The prefill kernels' cubin is byte-identical to main's (checked here), so nsa_prefill_test is
# not rerun. Then against main 2d3c3d7 (b4a87bd's kernels), alternating x2: quick decode tables,
# 7b 1 x 64k and 32 x 64k traces, e2e --quick.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
b=$here/stage/bin; m=$here/stage/main
mkdir -p $out/tests; for x in $here/stage $m; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
long1='Presets/ModelTest.LogitsAndGreedyTokensMatchTheCpuReference/paper_3_layers'
long2='Prompts/LongPrefillTest.LongPromptMatchesTheCpuReference/fla_340m_65569'
( timeout 90 $b/nsa_decode_test > $out/tests/nsa_decode_test.log 2>&1; el decode $?
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
for i in 1 2; do
  for v in main:$m warp:$b; do
    timeout 30 ${v#*:}/nsa_decode_bench --quick > $out/dbench-${v%%:*}-$i.md 2>&1
    for s in 7b:1:65536 7b:32:65536; do
      NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=$s timeout 20 ${v#*:}/nsa_decode_bench > $out/trace-${v%%:*}-${s//:/-}-$i.txt 2>&1
    done
    timeout 40 ${v#*:}/e2e_decode_bench --quick > $out/e2e-${v%%:*}-$i.md 2>&1
  done
done; el bench 0
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/tests/*.log; grep -h "FAILED  \]" $out/tests/*.log | head
grep -h "PASS\|FAIL" $out/tests/torch_*.log $out/tests/server_smoke.log | tail -6
for f in $out/tests/*.log; do s=$(stat -c %s $f); [ $s -gt 2000000 ] && { head -c 1000000 $f > $f.head; rm $f; }; done
for f in $out/dbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';')"; done
for f in $out/e2e-*-?.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
for f in $out/trace-*.txt; do echo "== $(basename $f) $(grep -E "^\| 7b" $f | cut -d'|' -f2-5)"; grep -E "trace (compressed|selected|combine)" $f | cut -c1-100; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
