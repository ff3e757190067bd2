#!/usr/bin/env bash
# Tenth session, call 3: against main 83935d1 in one call: wip/decode-div32 (positions divided in
# 32 bits; NSA_DECODE_OVERSUB / NSA_DECODE_OVERSUB_CMP sweeps), wip/decode-fences (acquire-release
# fences in the hand-offs) and wip/decode-nosleep (fences + polls without nanosleep): decode tests,
# quick decode tables, e2e --quick, traces at 7b 1 x 64k.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
m=$here/stage/bin; d=$here/stage/wip-decode-div32; f=$here/stage/wip-decode-fences; n=$here/stage/wip-decode-nosleep; mkdir -p $out
for x in $here/stage $d $f $n; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
for v in div32:$d fences:$f nosleep:$n; do
  timeout 120 ${v#*:}/nsa_decode_test > $out/${v%%:*}-nsa_decode_test.log 2>&1 &
done; wait; el tests 0
for i in 1 2; do
  for v in main:$m div32:$d fences:$f nosleep:$n; do
    timeout 60 ${v#*:}/nsa_decode_bench --quick > $out/dbench-${v%%:*}-$i.md 2>&1
  done
  for k in 2:3 2:4 2:6 3:4 3:6; do
    NSA_DECODE_OVERSUB=${k%:*} NSA_DECODE_OVERSUB_CMP=${k#*:} timeout 60 $d/nsa_decode_bench --quick > $out/dbench-div32-o${k/:/c}-$i.md 2>&1
  done
done; el dbench 0
for i in 1 2; do
  for v in main:$m div32:$d fences:$f nosleep:$n; do
    timeout 40 ${v#*:}/e2e_decode_bench --quick > $out/e2e-${v%%:*}-$i.md 2>&1
  done
  NSA_DECODE_OVERSUB_CMP=4 timeout 40 $d/e2e_decode_bench --quick > $out/e2e-div32-o2c4-$i.md 2>&1
done; el e2e 0
for v in main:$m fences:$f nosleep:$n; do
  NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=7b:1:65536 timeout 30 ${v#*:}/nsa_decode_bench > $out/trace-${v%%:*}-7b-1-65536.txt 2>&1
done; el traces 0
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
for f in $out/dbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';')"; done
for f in $out/trace-*.txt; do echo "== $(basename $f)"; grep trace $f; done
for f in $out/e2e-*.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
