#!/usr/bin/env bash
# Eleventh session, call 4: the instruction-cache probe with a second pass; ncu on main 9bbb5f4's
# fused decode kernel at 7b 1 x 64k (warp states: how much of a warp's time is "no instruction";
# per-instruction source counters); wip/merge-one-site (MergeFactors through one call site, 32 KB
# less code) against main: its nsa_decode_test, alternating quick decode tables, traces at batch 1,
# e2e --quick, then its model_gpu_test.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
m=$here/stage/bin; c=$here/stage/wip-merge-one-site; ncu=/usr/local/cuda/bin/ncu; mkdir -p $out; cp stage/COMMIT $out/commit.txt
for x in $here/stage $c; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > $out/gpu.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
timeout 60 $m/icache_probe > $out/icache_probe.md 2>&1; el icache $?
NSA_BENCH_ONLY=7b:1:65536 timeout 100 $ncu --clock-control none -k regex:FusedKernel --launch-skip 5 --launch-count 1 \
  --section WarpStateStats --section SchedulerStats --section LaunchStats --section Occupancy --section InstructionStats \
  $m/nsa_decode_bench > $out/ncu-details-7b-1x64k.txt 2>&1; el ncu-details $?
NSA_BENCH_ONLY=7b:1:65536 timeout 100 $ncu --clock-control none -k regex:FusedKernel --launch-skip 5 --launch-count 1 \
  --section SourceCounters --page source --print-source sass --csv $m/nsa_decode_bench > $out/ncu-source-7b-1x64k.csv 2> $out/ncu-source.err; el ncu-source $?
gzip $out/ncu-source-7b-1x64k.csv
timeout 90 $c/nsa_decode_test > $out/one-site-nsa_decode_test.log 2>&1; el decode-test $?
for i in 1 2 3; do
  for v in main:$m one:$c; do
    timeout 60 ${v#*:}/nsa_decode_bench --quick > $out/dbench-${v%%:*}-$i.md 2>&1
  done
done; el dbench 0
for i in 1 2; do
  for s in 7b:1:65536 7b:1:1024; do
    for v in main:$m one:$c; do
      NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=$s timeout 30 ${v#*:}/nsa_decode_bench > $out/trace-${v%%:*}-${s//:/-}-$i.txt 2>&1
    done
  done
done; el trace 0
for i in 1 2; do
  for v in main:$m one:$c; do
    timeout 40 ${v#*:}/e2e_decode_bench --quick > $out/e2e-${v%%:*}-$i.md 2>&1
  done
done; el e2e 0
timeout 250 $c/model_gpu_test > $out/one-site-model_gpu_test.log 2>&1; el model $?
cat $out/icache_probe.md
grep -iE "no.instruction|stall|Warp Cycles|Issued Ipc|Eligible|Active Warps|No Eligible|One or More" $out/ncu-details-7b-1x64k.txt | head -40
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
for f in $out/dbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';')"; done
for f in $out/e2e-*-?.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
for f in $out/trace-*.txt; do echo "== $(basename $f)"; grep -E "trace|^\| (7b|paper)" $f | cut -c1-150; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
