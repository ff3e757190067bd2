#!/usr/bin/env bash
# Eighth session, call 7: wip/norm-in-gemm (RMSNorm folded into the small-m products): its op
# test, e2e with and without the fold (NSA_FUSED_NORM=0, the same binary, alternating), the model test.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
s=stage/wip-norm
mkdir -p $out; echo "$s $(cat $s/COMMIT)" > $out/commits.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
timeout 40 $s/model_ops_gpu_test > $out/norm-model_ops_gpu_test.log 2>&1; el ops $?
for i in 1 2; do
  NSA_FUSED_NORM=0 timeout 30 $s/e2e_decode_bench --quick > $out/e2e-norm-off-$i.md 2>&1; el e2e-off $?
  timeout 30 $s/e2e_decode_bench --quick > $out/e2e-norm-fused-$i.md 2>&1; el e2e-fused $?
done
timeout 140 $s/model_gpu_test > $out/norm-model_gpu_test.log 2>&1; el model $?
grep -hE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
for f in $out/e2e-*.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 65536|32 x 65536|8k|64k) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
