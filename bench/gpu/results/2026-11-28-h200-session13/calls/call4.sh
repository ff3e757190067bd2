#!/usr/bin/env bash
# Thirteenth session, call 4: wip/lean-final (the decode kernel's lean copies, the prefill kernels'
# strided ones, ZeroRows 16 bytes a store) staged whole: every GPU test through run-all.sh
# --parallel, then the full benches (run-all.sh --only bench: the RESULTS.md block). Then
# wip/lean-contig (LoadContiguousRows with the source an increment) against it: quick decode
# tables, batch-1 traces and e2e --quick, alternating.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
b=$here/stage/bin; c=$here/stage/wip-lean-contig
mkdir -p $out; for x in $here/stage $c; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
timeout 400 bash bench/gpu/run-all.sh $out/final --only tests --parallel > $out/run-all-tests.txt 2>&1; el tests $?
timeout 150 bash bench/gpu/run-all.sh $out/final --only bench > $out/run-all-bench.txt 2>&1; el bench $?
for i in 1 2; do
  for v in final:$b contig:$c; do
    timeout 30 ${v#*:}/nsa_decode_bench --quick > $out/dbench-${v%%:*}-$i.md 2>&1
    NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=7b:1:65536 timeout 20 ${v#*:}/nsa_decode_bench > $out/trace-${v%%:*}-7b-1-$i.txt 2>&1
    timeout 40 ${v#*:}/e2e_decode_bench --quick > $out/e2e-${v%%:*}-$i.md 2>&1
  done
done; el compare 0
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/final/*.log; grep -h "FAILED  \]" $out/final/*.log | head
grep -h "PASS\|FAIL" $out/final/torch_*.log $out/final/server_smoke.log | tail -6
for f in $out/final/*.log; do s=$(stat -c %s $f); [ $s -gt 2000000 ] && { head -c 1000000 $f > $f.head; rm $f; }; done
for f in $out/dbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';')"; done
for f in $out/e2e-*-?.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
for f in $out/trace-*.txt; do echo "== $(basename $f)"; grep -E "trace (compressed|score|selected|combine)|^\| 7b" $f | cut -c1-110; done
grep -E "^\| (7b|paper) \| (1|8|32) \| 64k" $out/final/nsa_decode_bench.md | head -8
grep -E "^\| (7b|paper) \| (64k|128k)" $out/final/nsa_prefill_bench.md | head -4
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
