#!/usr/bin/env bash
# Ninth session, call 8: main's final build a698f1f (the decode hand-offs and the combine over warps) staged
# whole: every GPU test (nsa_prefill_test: its 128k cases; its kernels are unchanged since
# 46521b7 and its other 180 cases ran at ffef11c), the PyTorch comparisons, the server smoke,
# then the full decode table and the prefill bench, each with torch SDPA in the same call, and the
# full end-to-end bench.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
b=$here/stage/bin; mkdir -p $out; cp stage/COMMIT $out/commit.txt
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
timeout 60 $b/nsa_decode_bench > $out/nsa_decode_bench.md 2>&1; el dbench $?
PYTHONUNBUFFERED=1 timeout 60 python3 bench/gpu/sdpa_decode.py > $out/sdpa_decode.md 2>&1; el sdpa-d $?
timeout 60 $b/nsa_decode_bench --prefill > $out/nsa_prefill_bench.md 2>&1; el pbench $?
PYTHONUNBUFFERED=1 timeout 60 python3 bench/gpu/sdpa_prefill.py > $out/sdpa_prefill.md 2>&1; el sdpa-p $?
timeout 90 $b/e2e_decode_bench > $out/e2e_decode_bench.md 2>&1; el e2e $?
grep -hE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
tail -n 2 $out/torch_*.log $out/server_smoke.log
grep -E "^\| (7b|paper) \| (1|8|32) \| (64k|128k|1k) " $out/nsa_decode_bench.md | cut -d'|' -f2-8
grep -E "64k|128k" $out/sdpa_decode.md | head -8
grep -E "^\| (7b|paper) \| (64k|128k) " $out/nsa_prefill_bench.md | cut -d'|' -f2-6
grep -E "^\| " $out/e2e_decode_bench.md
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
