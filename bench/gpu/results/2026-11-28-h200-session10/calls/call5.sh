#!/usr/bin/env bash
# Tenth session, call 5: main 2e4d317 (= the merge 27d830e: the one-wave compressed splits) staged
# whole: every GPU test binary (nsa_prefill_test: its 128k cases; its kernels are unchanged since
# 46521b7), the four PyTorch comparisons and the server smoke; then ncu's per-instruction source
# counters (SASS, executed instructions and stall samples) of the fused decode kernel at 7b 32 x 64k.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
b=$here/stage/bin; ncu=/usr/local/cuda/bin/ncu; mkdir -p $out; cp stage/COMMIT $out/commit.txt
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $out/gpu.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
for t in model_ops_gpu_test kv_write_test pdl_test sampling_gpu_test engine_gpu_test nsa_decode_test; do
  timeout 90 $b/$t > $out/$t.log 2>&1; el $t $?
done
timeout 200 $b/nsa_prefill_test --gtest_filter='*128k*' > $out/nsa_prefill_test-128k.log 2>&1 &
pf=$!
timeout 250 $b/model_gpu_test > $out/model_gpu_test.log 2>&1; el model $?
wait $pf; el prefill-128k $?
models=$(mktemp -d)
for preset in tiny tiny-paper; do
  $b/nsa-model create --preset $preset --out $models/$preset --seed 3 > /dev/null 2>&1
  timeout 60 python3 tests/reference/compare_logits.py --model $models/$preset --logits-tool $here/bench/gpu/nsa-logits-cuda \
    --prompt-len 150 --num-decode 100 --seed 4 --rtol 0.1 > $out/torch_$preset.log 2>&1; el torch-$preset $?
done
for preset in fla-340m paper; do
  $b/nsa-model create --preset $preset --num-layers 2 --out $models/$preset --seed 3 --quiet > /dev/null 2>&1
  timeout 120 python3 tests/reference/compare_logits.py --model $models/$preset --logits-tool $here/bench/gpu/nsa-logits-cuda \
    --prompt-len 1100 --num-decode 50 --seed 4 --rtol 0.1 --timeout 900 > $out/torch_$preset.log 2>&1; el torch-$preset $?
done
timeout 60 bash bench/gpu/server-smoke.sh $b/nsa-server $here/stage/models/tiny > $out/server_smoke.log 2>&1; el smoke $?
NSA_BENCH_ONLY=7b:32:65536 timeout 120 $ncu --clock-control none -k regex:FusedKernel --launch-skip 5 --launch-count 1 \
  --section SourceCounters --page source --print-source sass --csv $b/nsa_decode_bench > $out/ncu-source-7b-32x64k.csv 2> $out/ncu-source.err; el ncu $?
gzip $out/ncu-source-7b-32x64k.csv
grep -hE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
tail -n 2 $out/torch_*.log $out/server_smoke.log
tail -3 $out/ncu-source.err; ls -la $out
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
