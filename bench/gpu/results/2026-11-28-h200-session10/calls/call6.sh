#!/usr/bin/env bash
# Tenth session, call 6 (the last): wip/decode-copyrows (tile copies without per-copy address
# arithmetic), wip/decode-rescale (copyrows + O rescaled only when a maximum moved) and
# wip/prefill-copyrows (copyrows + the prefill selected branch's page copies) against main
# 2e4d317: their kernel tests, quick decode tables, e2e --quick, the prefill bench at 64k; then
# main's full decode table, prefill bench, torch SDPA for both and the full e2e bench (the
# RESULTS.md block); last, the rescale branch's model_gpu_test if time is left.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
m=$here/stage/bin; c=$here/stage/wip-decode-copyrows; r=$here/stage/wip-decode-rescale; p=$here/stage/wip-prefill-copyrows
mkdir -p $out; cp stage/COMMIT $out/commit.txt
for x in $here/stage $c $r $p; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $out/gpu.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
timeout 90 $c/nsa_decode_test > $out/copyrows-nsa_decode_test.log 2>&1 &
timeout 90 $r/nsa_decode_test > $out/rescale-nsa_decode_test.log 2>&1 &
timeout 150 $p/nsa_prefill_test --gtest_filter='-*128k*' > $out/prefill-copyrows-nsa_prefill_test.log 2>&1 &
wait; el tests 0
for i in 1 2; do
  for v in main:$m copyrows:$c rescale:$r; do
    timeout 60 ${v#*:}/nsa_decode_bench --quick > $out/dbench-${v%%:*}-$i.md 2>&1
  done
  for s in 7b:1:65536 paper:1:65536; do
    for v in main:$m pcopy:$p; do
      NSA_BENCH_ONLY=$s timeout 60 ${v#*:}/nsa_decode_bench --prefill > $out/pbench-${v%%:*}-${s%%:*}-$i.md 2>&1
    done
  done
done; el dbench 0
for i in 1 2; do
  for v in main:$m copyrows:$c rescale:$r; do
    timeout 40 ${v#*:}/e2e_decode_bench --quick > $out/e2e-${v%%:*}-$i.md 2>&1
  done
done; el e2e-quick 0
timeout 60 $m/nsa_decode_bench > $out/nsa_decode_bench.md 2>&1; el dbench-full $?
PYTHONUNBUFFERED=1 timeout 90 python3 bench/gpu/sdpa_decode.py > $out/sdpa_decode.md 2>&1; el sdpa-d $?
timeout 90 $m/nsa_decode_bench --prefill > $out/nsa_prefill_bench.md 2>&1; el pbench-full $?
PYTHONUNBUFFERED=1 timeout 90 python3 bench/gpu/sdpa_prefill.py > $out/sdpa_prefill.md 2>&1; el sdpa-p $?
timeout 120 $m/e2e_decode_bench > $out/e2e_decode_bench.md 2>&1; el e2e-full $?
left=$(( 500 - ($(date +%s) - t0) ))
[ $left -gt 30 ] && { timeout $left $r/model_gpu_test > $out/rescale-model_gpu_test.log 2>&1; el rescale-model $?; }
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
for f in $out/dbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';')"; done
for f in $out/pbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-9 | tr '\n' ';')"; done
for f in $out/e2e-*-?.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
grep -E "^\| (7b|paper) \| (1|8|32) \| (64k|128k) " $out/nsa_decode_bench.md | cut -d'|' -f2-8
grep -E "^\| (7b|paper) \| (64k|128k) " $out/nsa_prefill_bench.md | cut -d'|' -f2-6
grep -E "^\| " $out/e2e_decode_bench.md | head -20
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
