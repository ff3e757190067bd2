#!/usr/bin/env bash
# Fourteenth session, call 3: the merge tasks of several heads at large batches (CombineHeads),
# nsa_decode_test (which runs 4 or 2 heads a task against the default) and engine_gpu_test, then
# variants by environment alternating x2: NSA_DECODE_MERGE_HEADS=1 (the old merge), the default
# (4 heads at 7b/paper 32 x 64k), 2, 8, the default with NSA_DECODE_SEL_WAVE=1, and 2 heads with the
# wave; quick decode tables, traces of 7b 32 x 64k, paper 32 x 64k, 7b 8 x 64k; e2e --quick.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
b=$here/stage/bin
mkdir -p $out/tests; cat stage/COMMIT > $out/commit.txt; nvidia-smi --query-gpu=name,driver_version --format=csv > $out/gpu.txt 2>&1
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
( timeout 120 $b/nsa_decode_test > $out/tests/nsa_decode_test.log 2>&1; el decode $? ) &
( timeout 60 $b/engine_gpu_test > $out/tests/engine_gpu_test.log 2>&1; el engine $? ) &
wait; el tests 0
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/tests/*.log; grep -h "FAILED  \]" $out/tests/*.log | head
variants=("mh1:NSA_DECODE_MERGE_HEADS=1" "auto:X=1" "mh2:NSA_DECODE_MERGE_HEADS=2" "mh8:NSA_DECODE_MERGE_HEADS=8"
          "auto_sel:NSA_DECODE_SEL_WAVE=1" "mh2_sel:NSA_DECODE_MERGE_HEADS=2 NSA_DECODE_SEL_WAVE=1")
for i in 1 2; do
  for v in "${variants[@]}"; do
    name=${v%%:*}; envs=${v#*:}
    env $envs timeout 60 $b/nsa_decode_bench --quick > $out/dbench-$name-$i.md 2>&1
    for s in 7b:32:65536 paper:32:65536 7b:8:65536; do
      env $envs NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=$s timeout 20 $b/nsa_decode_bench > $out/trace-$name-${s//:/-}-$i.txt 2>&1
    done
    env $envs timeout 60 $b/e2e_decode_bench --quick > $out/e2e-$name-$i.md 2>&1
  done
done; el bench 0
for f in $out/dbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';')"; done
for f in $out/e2e-*.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
for f in $out/trace-*-1.txt; do echo "== $(basename $f) $(grep -E "^\| (7b|paper)" $f | cut -d'|' -f2-5)"; grep -E "trace (selected|combine)" $f | cut -c1-112; done
for f in $out/tests/*.log; do s=$(stat -c %s $f); [ $s -gt 2000000 ] && { head -c 1000000 $f > $f.head; rm $f; }; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
