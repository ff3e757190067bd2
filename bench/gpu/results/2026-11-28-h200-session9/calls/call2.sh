#!/usr/bin/env bash
# Ninth session, call 2: wip/decode-handoffs (6cfa508: score tasks merge the log-sum-exps
# themselves, selected tasks the selection, the combine's loads in flight together) against main
# a2cfd36 in the same call: its decode test, the quick decode bench and traces of both, e2e
# --quick of both, then its model test.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
b=$here/stage/bin; h=$here/stage/handoffs; mkdir -p $out
for x in stage $h; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
timeout 90 $h/nsa_decode_test > $out/handoffs-nsa_decode_test.log 2>&1; el test $?
for i in 1 2; do
  timeout 60 $b/nsa_decode_bench --quick > $out/dbench-main-$i.md 2>&1; el dbench-main $?
  timeout 60 $h/nsa_decode_bench --quick > $out/dbench-handoffs-$i.md 2>&1; el dbench-handoffs $?
done
for cfg in 7b:1:65536 7b:32:65536 7b:1:1024; do
  for v in main:$b handoffs:$h; do
    NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=$cfg timeout 30 ${v#*:}/nsa_decode_bench > $out/trace-${v%%:*}-${cfg//:/-}.txt 2>&1
  done
done; el traces 0
for i in 1 2; do
  timeout 40 $b/e2e_decode_bench --quick > $out/e2e-main-$i.md 2>&1; el e2e-main $?
  timeout 40 $h/e2e_decode_bench --quick > $out/e2e-handoffs-$i.md 2>&1; el e2e-handoffs $?
done
timeout 250 $h/model_gpu_test > $out/handoffs-model_gpu_test.log 2>&1; el model $?
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
for f in $out/dbench-*.md; do echo "== $(basename $f)"; grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-6 | tr '\n' ';'; echo; done
for f in $out/trace-*.txt; do echo "== $(basename $f)"; grep trace $f; done
for f in $out/e2e-*.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
