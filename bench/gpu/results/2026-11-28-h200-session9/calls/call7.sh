#!/usr/bin/env bash
# Ninth session, call 7: wip/combine-warps (the combine's sum split over the warps, four partials'
# loads in flight a round) against main 680a286 (= 6cfa508's kernels, stage/bin) in the same call:
# its decode test, the quick decode bench and e2e --quick of both, a trace of each at 7b 1 x 64k.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
m=$here/stage/bin; c=$here/stage/combine; mkdir -p $out
for x in $here/stage $c; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
timeout 90 $c/nsa_decode_test > $out/combine-nsa_decode_test.log 2>&1; el test $?
for i in 1 2; do
  timeout 60 $m/nsa_decode_bench --quick > $out/dbench-main-$i.md 2>&1; el dbench-main $?
  timeout 60 $c/nsa_decode_bench --quick > $out/dbench-combine-$i.md 2>&1; el dbench-combine $?
done
for v in main:$m combine:$c; do
  NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=7b:1:65536 timeout 30 ${v#*:}/nsa_decode_bench > $out/trace-${v%%:*}-7b-1-65536.txt 2>&1
done; el traces 0
for i in 1 2; do
  timeout 40 $m/e2e_decode_bench --quick > $out/e2e-main-$i.md 2>&1; el e2e-main $?
  timeout 40 $c/e2e_decode_bench --quick > $out/e2e-combine-$i.md 2>&1; el e2e-combine $?
done
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
for f in $out/dbench-*.md; do echo "== $(basename $f)"; grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';'; echo; done
for f in $out/trace-*.txt; do echo "== $(basename $f)"; grep trace $f; done
for f in $out/e2e-*.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
