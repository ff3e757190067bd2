#!/usr/bin/env bash
# Thirteenth session, call 2: wip/lean-copies 7ea7d6a (lean row copies; division-free key-split
# merge) against main 202e1d7 (d4a5803's kernels), alternating: decode quick tables, prefill 7b and
# paper at 64k, e2e --quick, the batch-1 trace. The ptxas probe and its SASS. Then every GPU test
# of the branch through run-all.sh --parallel (its first run on the GPU machine).
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
b=$here/stage/bin; m=$here/stage/main; cb=/usr/local/cuda/bin
mkdir -p $out; for x in $here/stage $m; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
$b/minmax_probe > $out/minmax_probe.txt 2>&1; el probe $?
$cb/nvdisasm -c $here/stage/minmax.cubin > $out/minmax_probe.sass 2>&1
for i in 1 2; do
  for v in main:$m lean:$b; do
    timeout 30 ${v#*:}/nsa_decode_bench --quick > $out/dbench-${v%%:*}-$i.md 2>&1
    NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=7b:1:65536 timeout 20 ${v#*:}/nsa_decode_bench > $out/trace-${v%%:*}-7b-1-$i.txt 2>&1
    for s in 7b:1:65536 paper:1:65536; do
      NSA_BENCH_ONLY=$s timeout 60 ${v#*:}/nsa_decode_bench --prefill > $out/prefill-${v%%:*}-${s%%:*}-$i.md 2>&1
    done
    timeout 40 ${v#*:}/e2e_decode_bench --quick > $out/e2e-${v%%:*}-$i.md 2>&1
  done
done; el bench 0
timeout 420 bash bench/gpu/run-all.sh $out/tests --only tests --parallel > $out/run-all.txt 2>&1; el tests $?
tail -30 $out/run-all.txt
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/tests/*.log; grep -h "FAILED  \]" $out/tests/*.log | head
for f in $out/tests/*.log; do s=$(stat -c %s $f); [ $s -gt 2000000 ] && { head -c 1000000 $f > $f.head; rm $f; }; done
for f in $out/dbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';')"; done
for f in $out/prefill-*.md; do echo "== $(basename $f)"; grep -E "^\| (7b|paper) " $f | head -3; done
for f in $out/e2e-*-?.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
for f in $out/trace-*.txt; do echo "== $(basename $f)"; grep -E "trace (compressed|score|selected|combine)|^\| 7b" $f | cut -c1-110; done
cat $out/minmax_probe.txt; grep -n "VIMNMX\|ISETP" $out/minmax_probe.sass | head -20
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
