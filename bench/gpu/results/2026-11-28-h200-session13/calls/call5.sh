#!/usr/bin/env bash
# Thirteenth session, call 5: main ba2449e (b4a87bd's kernels) against wip/lean-contig 9c4c99f
# (LoadContiguousRows with the source an increment) and wip/occupancy5 5187a08 (lean-contig and
# the fused kernel at 5 blocks an SM for one slice: 96 registers, 92/116 B spilled), alternating
# x2: quick decode tables, batch-1 / batch-32 traces, e2e --quick. Then nsa_decode_test and
# model_gpu_test of both branches side by side, then the full benches of both (occupancy5 through
# run-all.sh --only bench with the SDPA baselines; lean-contig's binaries directly).
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
o=$here/stage/bin; c=$here/stage/wip-lean-contig; m=$here/stage/main
mkdir -p $out; for x in $here/stage $c $m; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
for i in 1 2; do
  for v in main:$m contig:$c occ5:$o; do
    timeout 30 ${v#*:}/nsa_decode_bench --quick > $out/dbench-${v%%:*}-$i.md 2>&1
    for s in 7b:1:65536 7b:32:65536; do
      NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=$s timeout 20 ${v#*:}/nsa_decode_bench > $out/trace-${v%%:*}-${s//:/-}-$i.txt 2>&1
    done
    timeout 40 ${v#*:}/e2e_decode_bench --quick > $out/e2e-${v%%:*}-$i.md 2>&1
  done
done; el compare 0
mkdir -p $out/contig $out/occ5
( timeout 60 $c/nsa_decode_test > $out/contig/nsa_decode_test.log 2>&1; el contig-decode $? ) &
( timeout 60 $o/nsa_decode_test > $out/occ5/nsa_decode_test.log 2>&1; el occ5-decode $? ) &
( timeout 300 $c/model_gpu_test > $out/contig/model_gpu_test.log 2>&1; el contig-model $? ) &
( timeout 300 $o/model_gpu_test > $out/occ5/model_gpu_test.log 2>&1; el occ5-model $? ) &
wait; el tests 0
timeout 150 bash bench/gpu/run-all.sh $out/occ5-final --only bench > $out/run-all-bench-occ5.txt 2>&1; el bench-occ5 $?
mkdir -p $out/contig-final
timeout 40 $c/nsa_decode_bench > $out/contig-final/nsa_decode_bench.md 2>&1
timeout 60 $c/nsa_decode_bench --prefill > $out/contig-final/nsa_prefill_bench.md 2>&1
timeout 60 $c/e2e_decode_bench > $out/contig-final/e2e_decode_bench.md 2>&1; el bench-contig $?
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*/*.log; grep -h "FAILED  \]" $out/*/*.log | head
for f in $out/dbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';')"; done
for f in $out/e2e-*-?.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
for f in $out/trace-*.txt; do echo "== $(basename $f) $(grep -E "^\| 7b" $f | cut -d'|' -f2-5)"; grep -E "trace (compressed|selected|combine)" $f | cut -c1-100; done
for d in occ5-final contig-final; do echo "== $d"; grep -E "^\| (7b|paper) \| (1|8|32) \| 64k" $out/$d/nsa_decode_bench.md; grep -E "^\| (1 x 512|32 x 65536|27 x 65536) " $out/$d/e2e_decode_bench.md; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
