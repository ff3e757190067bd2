#!/usr/bin/env bash
# Ninth session, call 6: wip/gemv-overlap (the small-m products on a capped grid, blocks taking
# groups of columns in turn; P weight vectors a lane loaded before the PDL wait) against main
# 661d00b (= 6cfa508's kernels, stage/main2) in the same call: its op test, e2e --quick A/B.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
m=$here/stage/main2; o=$here/stage/overlap; mkdir -p $out
for x in $m $o; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
timeout 60 $o/model_ops_gpu_test > $out/overlap-model_ops_gpu_test.log 2>&1; el ops $?
for i in 1 2; do
  timeout 40 $m/e2e_decode_bench --quick > $out/e2e-main-$i.md 2>&1; el e2e-main $?
  for cfg in 0:0 2:0 2:2 2:4 3:4 4:4 4:2; do
    NSA_SMALL_GEMM_BLOCKS_PER_SM=${cfg%%:*} NSA_SMALL_GEMM_PRELOAD=${cfg#*:} timeout 40 $o/e2e_decode_bench --quick > $out/e2e-cap${cfg%%:*}-p${cfg#*:}-$i.md 2>&1; el e2e-$cfg $?
  done
done
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
for f in $out/e2e-*.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
