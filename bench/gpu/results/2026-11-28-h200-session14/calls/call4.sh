#!/usr/bin/env bash
# Fourteenth session, call 4: SEL_WAVE on by default, merge tasks of several heads at large
# batches; nsa_decode_test as built and with NSA_DECODE_WIN_LATE=1; then variants by environment
# alternating x2: the previous main's sizes (SEL_WAVE=0, MERGE_HEADS=1), the new default, with
# NSA_DECODE_OVERSUB_CMP=3 (a wave of compressed tasks: 4 splits at 32 x 64k), with WIN_LATE=1, and
# both; quick decode tables, traces of 7b 32 x 64k and paper 32 x 64k, e2e --quick.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
b=$here/stage/bin
mkdir -p $out/tests; cat stage/COMMIT > $out/commit.txt; nvidia-smi --query-gpu=name,driver_version --format=csv > $out/gpu.txt 2>&1
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
( timeout 120 $b/nsa_decode_test > $out/tests/nsa_decode_test.log 2>&1; el decode $? ) &
( NSA_DECODE_WIN_LATE=1 timeout 120 $b/nsa_decode_test > $out/tests/nsa_decode_test-winlate.log 2>&1; el decode-winlate $? ) &
wait; el tests 0
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/tests/*.log; grep -h "FAILED  \]" $out/tests/*.log | head
variants=("old:NSA_DECODE_SEL_WAVE=0 NSA_DECODE_MERGE_HEADS=1" "new:X=1" "cmp3:NSA_DECODE_OVERSUB_CMP=3"
          "late:NSA_DECODE_WIN_LATE=1" "cmp3_late:NSA_DECODE_OVERSUB_CMP=3 NSA_DECODE_WIN_LATE=1")
for i in 1 2; do
  for v in "${variants[@]}"; do
    name=${v%%:*}; envs=${v#*:}
    env $envs timeout 60 $b/nsa_decode_bench --quick > $out/dbench-$name-$i.md 2>&1
    for s in 7b:32:65536 paper:32:65536; do
      env $envs NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=$s timeout 20 $b/nsa_decode_bench > $out/trace-$name-${s//:/-}-$i.txt 2>&1
    done
    env $envs timeout 60 $b/e2e_decode_bench --quick > $out/e2e-$name-$i.md 2>&1
  done
done; el bench 0
for f in $out/dbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';')"; done
for f in $out/e2e-*.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
for f in $out/trace-*-1.txt; do echo "== $(basename $f) $(grep -E "^\| (7b|paper)" $f | cut -d'|' -f2-5)"; grep -E "trace |merged" $f | cut -c1-112; done
for f in $out/tests/*.log; do s=$(stat -c %s $f); [ $s -gt 2000000 ] && { head -c 1000000 $f > $f.head; rm $f; }; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
