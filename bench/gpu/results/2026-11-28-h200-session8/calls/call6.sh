#!/usr/bin/env bash
# Eighth session, call 6: wip/split-head-groups (16 heads an item for prefill chunks) against
# main's 2648543 build: its op test, e2e (time to first token), and the model test.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
b=stage/bin; s=stage/wip-heads
mkdir -p $out; for x in stage $s; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
timeout 40 $s/model_ops_gpu_test > $out/heads-model_ops_gpu_test.log 2>&1; el ops $?
for i in 1 2; do
  timeout 40 $b/e2e_decode_bench --quick > $out/e2e-main-$i.md 2>&1; el e2e-main $?
  timeout 40 $s/e2e_decode_bench --quick > $out/e2e-heads-$i.md 2>&1; el e2e-heads $?
done
timeout 250 $s/model_gpu_test > $out/heads-model_gpu_test.log 2>&1; el model $?
grep -hE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
for f in $out/e2e-*.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|32 x 65536|8k|64k) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
