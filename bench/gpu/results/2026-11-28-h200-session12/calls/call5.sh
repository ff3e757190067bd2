#!/usr/bin/env bash
# Twelfth session, call 5 (the last, about 300 s of budget): wip/combine-16 c3bf052 (the combine's
# loads 16 at a time in flight) against main d4a5803: quick decode tables, the batch-1 trace and
# e2e --quick, alternating; then the branch's nsa_decode_test and model_gpu_test side by side.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
b=$here/stage/bin; c=$here/stage/wip-combine-16
mkdir -p $out; cp stage/COMMIT $out/commit.txt
for x in $here/stage $c; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
for i in 1 2; do
  for v in main:$b c16:$c; do
    timeout 30 ${v#*:}/nsa_decode_bench --quick > $out/dbench-${v%%:*}-$i.md 2>&1
    NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=7b:1:65536 timeout 20 ${v#*:}/nsa_decode_bench > $out/trace-${v%%:*}-7b-1-65536-$i.txt 2>&1
    timeout 30 ${v#*:}/e2e_decode_bench --quick > $out/e2e-${v%%:*}-$i.md 2>&1
  done
done; el bench 0
( timeout 200 $c/model_gpu_test > $out/c16-model_gpu_test.log 2>&1; el c16-model $? ) &
( timeout 60 $c/nsa_decode_test > $out/c16-nsa_decode_test.log 2>&1; el c16-decode $? ) &
wait
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
for f in $out/dbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';')"; done
for f in $out/e2e-*-?.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
for f in $out/trace-*.txt; do echo "== $(basename $f)"; grep -E "trace (selected|combine)|^\| 7b" $f | cut -c1-120; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
