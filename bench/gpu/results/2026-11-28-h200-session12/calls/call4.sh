#!/usr/bin/env bash
# Twelfth session, call 4: wip/final 0114b64 = main d4a5803 + wip/prefill-warp-split2 (the split
# walk's warps on their own, main's visibility tests) whole: every GPU test binary (nsa_prefill_test
# in full, 128k included), the four PyTorch comparisons, the smoke; then the prefill bench of it
# against main (7b and paper 64k, alternating), the benches (run-all.sh --only bench) and e2e --quick.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
b=$here/stage/bin; m=$here/stage/main
mkdir -p $out; cp stage/COMMIT $out/commit.txt
for x in $here/stage $m; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $out/gpu.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
for i in 1 2; do
  for s in 7b:1:65536 paper:1:65536; do
    for v in final:$b main:$m; do
      NSA_BENCH_ONLY=$s timeout 60 ${v#*:}/nsa_decode_bench --prefill > $out/pbench-${v%%:*}-${s%%:*}-$i.md 2>&1
    done
  done
done; el pbench 0
( timeout 420 $b/nsa_prefill_test > $out/nsa_prefill_test.log 2>&1; el prefill $? ) &
( timeout 330 $b/model_gpu_test > $out/model_gpu_test.log 2>&1; el model $? ) &
( for t in nsa_decode_test model_ops_gpu_test kv_write_test pdl_test sampling_gpu_test engine_gpu_test; do
    timeout 90 $b/$t > $out/$t.log 2>&1; el $t $?
  done ) &
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
timeout 120 bash bench/gpu/run-all.sh $out/bench --only bench > $out/run-all-bench.log 2>&1; el bench $?
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
tail -n 2 $out/torch_*.log $out/server_smoke.log
for f in $out/pbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d"|" -f2-11 | tr '\n' ';')"; done
grep -E "^\| (7b|paper) \| (1|8|32) \| (64k|128k) " $out/bench/nsa_decode_bench.md | cut -d'|' -f2-8
grep -E "^\| (7b|paper|g4) \| (8k|64k|128k) " $out/bench/nsa_prefill_bench.md | cut -d'|' -f2-7
grep -E "^\| " $out/bench/e2e_decode_bench.md | head -20
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
