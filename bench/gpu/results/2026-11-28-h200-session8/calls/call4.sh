#!/usr/bin/env bash
# Eighth session, call 4: wip/small-ops-latency (3357e40: RMSNorm and the q/k/v split for single
# rows) against main (ffef11c): e2e, its tests, ncu of its small kernels; main's whole
# nsa_prefill_test (without 128k) beside the model test.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
b=stage/bin; s=stage/wip-small-ops; ncu=/usr/local/cuda/bin/ncu
mkdir -p $out; for x in stage $s; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
timeout 40 $s/model_ops_gpu_test > $out/small-model_ops_gpu_test.log 2>&1; el ops $?
for i in 1 2; do
  timeout 40 $b/e2e_decode_bench --quick > $out/e2e-main-$i.md 2>&1; el e2e-main $?
  timeout 40 $s/e2e_decode_bench --quick > $out/e2e-small-$i.md 2>&1; el e2e-small $?
done
timeout 120 $ncu -k regex:'SmallGemm|RmsNorm|QkvSplit|KvWrite|Summary|Fused|Embed|Sample' --launch-count 300 \
  --metrics gpu__time_duration.sum,dram__bytes_read.sum,launch__grid_size --csv $s/e2e_decode_bench --profile > $out/ncu-e2e-small.csv 2>&1; el ncu $?
timeout 280 $b/nsa_prefill_test --gtest_filter='-*128k*' > $out/main-nsa_prefill_test.log 2>&1 &
pf=$!
timeout 280 $s/model_gpu_test > $out/small-model_gpu_test.log 2>&1; el model $?
timeout 60 $s/engine_gpu_test > $out/small-engine_gpu_test.log 2>&1; el engine $?
wait $pf; el prefill-test $?
grep -hE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
for f in $out/e2e-*.md; do echo "== $f"; grep -E "^\| [0-9]" $f | head -5; done
