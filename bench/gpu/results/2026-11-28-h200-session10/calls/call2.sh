#!/usr/bin/env bash
# Tenth session, call 2: wip/decode-prefetch (page-table entries fetched ahead) and
# wip/decode-oversub (main + NSA_DECODE_OVERSUB only) against main 83935d1 in one call: the
# branches' decode tests, quick decode tables at oversubscription 2 / 3 / 4, e2e --quick, traces
# at 7b 8 x 64k and 32 x 64k, and the SASS of main's fused kernel (instruction and spill counts).
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
m=$here/stage/bin; p=$here/stage/wip-decode-prefetch; o=$here/stage/wip-decode-oversub; mkdir -p $out
for x in $here/stage $p $o; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
timeout 90 $p/nsa_decode_test > $out/prefetch-nsa_decode_test.log 2>&1; el prefetch-test $?
timeout 90 $o/nsa_decode_test > $out/oversub-nsa_decode_test.log 2>&1; el oversub-test $?
for i in 1 2; do
  timeout 60 $m/nsa_decode_bench --quick > $out/dbench-main-$i.md 2>&1
  for k in 2 3 4; do
    NSA_DECODE_OVERSUB=$k timeout 60 $o/nsa_decode_bench --quick > $out/dbench-oversub$k-$i.md 2>&1
    NSA_DECODE_OVERSUB=$k timeout 60 $p/nsa_decode_bench --quick > $out/dbench-prefetch$k-$i.md 2>&1
  done
done; el dbench $?
for i in 1 2; do
  timeout 40 $m/e2e_decode_bench --quick > $out/e2e-main-$i.md 2>&1
  for k in 2 4; do
    NSA_DECODE_OVERSUB=$k timeout 40 $o/e2e_decode_bench --quick > $out/e2e-oversub$k-$i.md 2>&1
    NSA_DECODE_OVERSUB=$k timeout 40 $p/e2e_decode_bench --quick > $out/e2e-prefetch$k-$i.md 2>&1
  done
done; el e2e $?
for s in 7b:8:65536 7b:32:65536; do
  for v in main:$m prefetch:$p; do
    NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=$s timeout 30 ${v#*:}/nsa_decode_bench > $out/trace-${v%%:*}-${s//:/-}.txt 2>&1
  done
done; el traces 0
cuobjdump -sass -fun '_ZN3nsa4cuda46_GLOBAL__N__939bb149_13_nsa_decode_cu_0cc7400611FusedKernelILi1ELb1EEEvNS0_13NsaDecodeArgsENS1_5SizesEPf' \
  $m/nsa_decode_bench > $out/sass-main-fused1.txt 2>&1 || cuobjdump -sass $m/nsa_decode_bench > $out/sass-main-all.txt 2>&1; el sass $?
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
for f in $out/dbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';')"; done
for f in $out/trace-*.txt; do echo "== $(basename $f)"; grep trace $f; done
for f in $out/e2e-*.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
wc -l $out/sass-*.txt; grep -c "STL\|LDL" $out/sass-*.txt
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
