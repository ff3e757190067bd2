#!/usr/bin/env bash
# Tenth session, call 1: main 83935d1 (6cfa508's decode kernel; nsa_decode_test's new bucket check,
# never run) and wip/combine-warps af23043 (341d74e's fix: each branch's partials apart): both
# decode tests, the branch's model_gpu_test (its graph = eager case failed in a698f1f's form),
# main's small GPU tests, quick decode tables and e2e of both, main's eager stage profile, and
# ncu's stall reasons of main's fused kernel at 7b 1 x 64k and 32 x 64k (clocks not locked).
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
m=$here/stage/bin; c=$here/stage/wip-combine-warps; ncu=/usr/local/cuda/bin/ncu; mkdir -p $out
for x in $here/stage $c; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $out/gpu.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
timeout 90 $m/nsa_decode_test > $out/main-nsa_decode_test.log 2>&1; el main-decode $?
timeout 90 $c/nsa_decode_test > $out/combine-nsa_decode_test.log 2>&1; el combine-decode $?
(for t in model_ops_gpu_test kv_write_test pdl_test sampling_gpu_test; do timeout 90 $m/$t > $out/main-$t.log 2>&1; done) &
sm=$!
timeout 250 $c/model_gpu_test > $out/combine-model_gpu_test.log 2>&1; el combine-model $?
wait $sm; el small $?
for i in 1 2; do
  timeout 60 $m/nsa_decode_bench --quick > $out/dbench-main-$i.md 2>&1; el dbench-main $?
  timeout 60 $c/nsa_decode_bench --quick > $out/dbench-combine-$i.md 2>&1; el dbench-combine $?
done
for i in 1 2; do
  timeout 40 $m/e2e_decode_bench --quick > $out/e2e-main-$i.md 2>&1; el e2e-main $?
  timeout 40 $c/e2e_decode_bench --quick > $out/e2e-combine-$i.md 2>&1; el e2e-combine $?
done
timeout 60 $m/e2e_decode_bench --profile > $out/e2e-profile-main.md 2>&1; el profile $?
for s in 7b:1:65536 7b:32:65536; do
  NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=$s timeout 30 $m/nsa_decode_bench > $out/trace-main-${s//:/-}.txt 2>&1
  NSA_BENCH_ONLY=$s timeout 90 $ncu --clock-control none -k regex:FusedKernel --launch-skip 5 --launch-count 1 \
    --section SpeedOfLight --section WarpStateStats --section LaunchStats --section Occupancy \
    --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio,smsp__inst_executed.sum,sm__cycles_elapsed.avg \
    $m/nsa_decode_bench > $out/ncu-main-${s//:/-}.txt 2>&1; el ncu-$s $?
done
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
for f in $out/dbench-*.md; do echo "== $(basename $f)"; grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';'; echo; done
for f in $out/trace-*.txt; do echo "== $(basename $f)"; grep trace $f; done
for f in $out/e2e-*-?.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
grep -A3 "stage times" $out/e2e-profile-main.md
for f in $out/ncu-*.txt; do echo "== $f"; grep -E "Duration|stalled.*ratio|inst_executed" $f | awk '$NF+0 > 0.3 || /Duration|inst/'; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
