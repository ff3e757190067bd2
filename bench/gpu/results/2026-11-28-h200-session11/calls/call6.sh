#!/usr/bin/env bash
# Eleventh session, call 6: the one model_gpu_test case call 5's 250 s timeout cut off
# (fla_340m_65569, 20/21 passed before it in both builds), for main a3f1682 and wip/copy-selection.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
b=$here/stage/bin; c=$here/stage/wip-copy-selection; mkdir -p $out; cp stage/COMMIT $out/commit.txt
for x in $here/stage $c; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
( timeout 150 $b/model_gpu_test --gtest_filter='*fla_340m_65569*' > $out/model_gpu_test-fla65569.log 2>&1; el main $? ) &
( timeout 150 $c/model_gpu_test --gtest_filter='*fla_340m_65569*' > $out/copysel-model_gpu_test-fla65569.log 2>&1; el copysel $? ) &
wait
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]|OK \]|FAILED  \]|worst" $out/*.log
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
