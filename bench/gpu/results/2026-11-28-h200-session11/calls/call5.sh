#!/usr/bin/env bash
# Eleventh session, call 5 (the last): main a3f1682 (the score tasks' rank + MergeFactors through
# one call site; stage.sh now builds first) whole: its GPU test binaries but nsa_prefill_test (the
# prefill kernels are unchanged since call 1's 189/189), the four PyTorch comparisons, the smoke,
# the benches (run-all.sh --only bench: the RESULTS.md block); wip/copy-selection's
# nsa_decode_test and model_gpu_test beside them, then alternating quick decode tables, e2e
# --quick and traces against main.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
b=$here/stage/bin; c=$here/stage/wip-copy-selection; mkdir -p $out; cp stage/COMMIT $out/commit.txt
for x in $here/stage $c; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $out/gpu.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
( timeout 250 $b/model_gpu_test > $out/model_gpu_test.log 2>&1; el model $? ) &
( timeout 250 $c/model_gpu_test > $out/copysel-model_gpu_test.log 2>&1; el copysel-model $? ) &
( for t in nsa_decode_test model_ops_gpu_test kv_write_test pdl_test sampling_gpu_test engine_gpu_test; do
    timeout 90 $b/$t > $out/$t.log 2>&1; el $t $?
  done
  timeout 90 $c/nsa_decode_test > $out/copysel-nsa_decode_test.log 2>&1; el copysel-decode $? ) &
( models=$(mktemp -d)
  for preset in tiny tiny-paper; do
    $b/nsa-model create --preset $preset --out $models/$preset --seed 3 > /dev/null 2>&1
    timeout 90 python3 tests/reference/compare_logits.py --model $models/$preset --logits-tool $here/bench/gpu/nsa-logits-cuda \
      --prompt-len 150 --num-decode 100 --seed 4 --rtol 0.1 > $out/torch_$preset.log 2>&1; el torch-$preset $?
  done
  for preset in fla-340m paper; do
    $b/nsa-model create --preset $preset --num-layers 2 --out $models/$preset --seed 3 --quiet > /dev/null 2>&1
    timeout 150 python3 tests/reference/compare_logits.py --model $models/$preset --logits-tool $here/bench/gpu/nsa-logits-cuda \
      --prompt-len 1100 --num-decode 50 --seed 4 --rtol 0.1 --timeout 900 > $out/torch_$preset.log 2>&1; el torch-$preset $?
  done
  timeout 60 bash bench/gpu/server-smoke.sh $b/nsa-server $here/stage/models/tiny > $out/server_smoke.log 2>&1; el smoke $? ) &
wait; el tests 0
timeout 150 bash bench/gpu/run-all.sh $out/bench --only bench > $out/run-all-bench.log 2>&1; el bench $?
for i in 1 2 3; do
  for v in main:$b copysel:$c; do
    timeout 60 ${v#*:}/nsa_decode_bench --quick > $out/dbench-${v%%:*}-$i.md 2>&1
  done
done; el dbench 0
for i in 1 2; do
  for v in main:$b copysel:$c; do
    timeout 40 ${v#*:}/e2e_decode_bench --quick > $out/e2e-${v%%:*}-$i.md 2>&1
    NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=7b:1:65536 timeout 30 ${v#*:}/nsa_decode_bench > $out/trace-${v%%:*}-7b-1-65536-$i.txt 2>&1
  done
done; el e2e-trace 0
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
tail -n 2 $out/torch_*.log $out/server_smoke.log
for f in $out/dbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';')"; done
for f in $out/e2e-*-?.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
for f in $out/trace-*.txt; do echo "== $(basename $f)"; grep -E "trace|^\| (7b|paper)" $f | cut -c1-150; done
grep -E "^\| (7b|paper) \| (1|8|32) \| (64k|128k) " $out/bench/nsa_decode_bench.md | cut -d'|' -f2-8
grep -E "^\| (7b|paper) \| (64k|128k) " $out/bench/nsa_prefill_bench.md | cut -d'|' -f2-6
grep -E "^\| " $out/bench/e2e_decode_bench.md | head -20
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
