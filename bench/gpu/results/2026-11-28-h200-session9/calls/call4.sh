#!/usr/bin/env bash
# Ninth session, call 4: wip/decode-rank-select (its second form: top picks by places, not serial rounds;
# finer trace stamps) against main 183479b (= 6cfa508's kernels) in the same call: its decode
# test, the quick decode bench (also with NSA_DECODE_RANK_SELECT=0), traces, e2e --quick.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
m=$here/stage/main2; r=$here/stage/rank; mkdir -p $out
for x in $m $r; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
timeout 90 $r/nsa_decode_test > $out/rank-nsa_decode_test.log 2>&1; el test $?
for i in 1 2; do
  timeout 60 $m/nsa_decode_bench --quick > $out/dbench-main-$i.md 2>&1; el dbench-main $?
  timeout 60 $r/nsa_decode_bench --quick > $out/dbench-rank-$i.md 2>&1; el dbench-rank $?
  NSA_DECODE_RANK_SELECT=0 timeout 60 $r/nsa_decode_bench --quick > $out/dbench-rounds-$i.md 2>&1; el dbench-rounds $?
done
for cfg in 7b:1:65536 7b:32:65536 paper:1:65536; do
  for v in main:$m rank:$r; do
    NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=$cfg timeout 30 ${v#*:}/nsa_decode_bench > $out/trace-${v%%:*}-${cfg//:/-}.txt 2>&1
  done
done; el traces 0
for i in 1 2; do
  timeout 40 $m/e2e_decode_bench --quick > $out/e2e-main-$i.md 2>&1; el e2e-main $?
  timeout 40 $r/e2e_decode_bench --quick > $out/e2e-rank-$i.md 2>&1; el e2e-rank $?
done
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
for f in $out/dbench-*.md; do echo "== $(basename $f)"; grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';'; echo; done
for f in $out/trace-*.txt; do echo "== $(basename $f)"; grep trace $f; done
for f in $out/e2e-*.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
