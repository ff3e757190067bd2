#!/usr/bin/env bash
# Tenth session, call 4: wip/decode-cmp-wave (compressed runs longer than selected ones split over
# one wave of resident blocks) against main 83935d1: its nsa_decode_test and model_gpu_test, the
# full decode table (8k-128k, both shapes) of both twice, e2e --quick of both twice.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
m=$here/stage/bin; w=$here/stage/wip-decode-cmp-wave; mkdir -p $out
for x in $here/stage $w; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $out/gpu.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
timeout 90 $w/nsa_decode_test > $out/wave-nsa_decode_test.log 2>&1; el test $?
timeout 250 $w/model_gpu_test > $out/wave-model_gpu_test.log 2>&1; el model $?
for i in 1 2; do
  timeout 60 $m/nsa_decode_bench > $out/dbench-main-$i.md 2>&1; el dbench-main $?
  timeout 60 $w/nsa_decode_bench > $out/dbench-wave-$i.md 2>&1; el dbench-wave $?
done
for i in 1 2; do
  timeout 40 $m/e2e_decode_bench --quick > $out/e2e-main-$i.md 2>&1
  timeout 40 $w/e2e_decode_bench --quick > $out/e2e-wave-$i.md 2>&1
done; el e2e 0
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
for f in $out/dbench-*.md; do echo "== $(basename $f)"; grep -E "^\| (7b|paper) \| (1|8|32) \| (8k|64k|128k) " $f | cut -d"|" -f2-5,8 | tr '\n' ';'; echo; done
for f in $out/e2e-*.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
