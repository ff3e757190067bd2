#!/usr/bin/env bash
# Twelfth session, call 1: quick decode tables, the batch-1 trace and e2e --quick of main against
# wip/decode-one-tile-site and wip/decode-review2 (alternating); the prefill bench (7b and paper
# 64k) of main against wip/prefill-warp-split; then the branches' tests side by side:
# warp-split's nsa_prefill_test in full (128k included), the decode branches' nsa_decode_test,
# review2's and one-tile's model_gpu_test.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
b=$here/stage/bin; o=$here/stage/wip-decode-one-tile-site; r=$here/stage/wip-decode-review2; w=$here/stage/wip-prefill-warp-split
mkdir -p $out; cp stage/COMMIT $out/commit.txt
for x in $here/stage $o $r $w; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $out/gpu.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
for i in 1 2 3; do
  for v in main:$b onetile:$o review2:$r; do
    timeout 60 ${v#*:}/nsa_decode_bench --quick > $out/dbench-${v%%:*}-$i.md 2>&1
  done
done; el dbench 0
for i in 1 2; do
  for v in main:$b onetile:$o review2:$r; do
    NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=7b:1:65536 timeout 30 ${v#*:}/nsa_decode_bench > $out/trace-${v%%:*}-7b-1-65536-$i.txt 2>&1
    timeout 40 ${v#*:}/e2e_decode_bench --quick > $out/e2e-${v%%:*}-$i.md 2>&1
  done
done; el e2e-trace 0
for i in 1 2; do
  for s in 7b:1:65536 paper:1:65536; do
    for v in main:$b warpsplit:$w; do
      NSA_BENCH_ONLY=$s timeout 60 ${v#*:}/nsa_decode_bench --prefill > $out/pbench-${v%%:*}-${s%%:*}-$i.md 2>&1
    done
  done
done; el pbench 0
( timeout 420 $w/nsa_prefill_test > $out/warpsplit-nsa_prefill_test.log 2>&1; el warpsplit-prefill $? ) &
( timeout 400 $r/model_gpu_test > $out/review2-model_gpu_test.log 2>&1; el review2-model $? ) &
( for v in onetile:$o review2:$r; do timeout 90 ${v#*:}/nsa_decode_test > $out/${v%%:*}-nsa_decode_test.log 2>&1; el ${v%%:*}-decode $?; done
  timeout 330 $o/model_gpu_test > $out/onetile-model_gpu_test.log 2>&1; el onetile-model $? ) &
wait; el tests 0
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
for f in $out/dbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';')"; done
for f in $out/e2e-*-?.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
for f in $out/trace-*.txt; do echo "== $(basename $f)"; grep -E "trace|^\| (7b|paper)" $f | cut -c1-150; done
for f in $out/pbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-7 | tr '\n' ';')"; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
