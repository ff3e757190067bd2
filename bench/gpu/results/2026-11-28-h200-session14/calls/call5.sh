#!/usr/bin/env bash
# Fourteenth session, call 5 (final build 7c450cd): every GPU test through run-all.sh --parallel,
# the full benches (run-all.sh --only bench: the RESULTS.md block), then the previous main's
# decode sizes by environment (NSA_DECODE_SEL_WAVE=0 NSA_DECODE_MERGE_HEADS=1) against the new
# default, alternating x2: quick decode tables, traces of 7b 32 x 64k and paper 32 x 64k, e2e --quick.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
b=$here/stage/bin
mkdir -p $out; cat stage/COMMIT > $out/commit.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
timeout 420 bash bench/gpu/run-all.sh $out/final --only tests --parallel > $out/run-all-tests.txt 2>&1; el tests $?
timeout 150 bash bench/gpu/run-all.sh $out/final --only bench > $out/run-all-bench.txt 2>&1; el bench $?
for i in 1 2; do
  for v in "old:NSA_DECODE_SEL_WAVE=0 NSA_DECODE_MERGE_HEADS=1" "new:X=1"; do
    name=${v%%:*}; envs=${v#*:}
    env $envs timeout 60 $b/nsa_decode_bench --quick > $out/dbench-$name-$i.md 2>&1
    for s in 7b:32:65536 paper:32:65536; do
      env $envs NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=$s timeout 20 $b/nsa_decode_bench > $out/trace-$name-${s//:/-}-$i.txt 2>&1
    done
    env $envs timeout 60 $b/e2e_decode_bench --quick > $out/e2e-$name-$i.md 2>&1
  done
done; el compare 0
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/final/*.log; grep -h "FAILED  \]" $out/final/*.log | head
grep -h "PASS\|FAIL" $out/final/torch_*.log $out/final/server_smoke.log | tail -6
for f in $out/final/*.log; do s=$(stat -c %s $f); [ $s -gt 2000000 ] && { head -c 1000000 $f > $f.head; rm $f; }; done
for f in $out/dbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';')"; done
for f in $out/e2e-*-?.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
for f in $out/trace-*-1.txt; do echo "== $(basename $f) $(grep -E "^\| (7b|paper)" $f | cut -d'|' -f2-5)"; grep -E "trace (selected|combine)" $f | cut -c1-112; done
grep -E "^\| (7b|paper) \| (1|8|32) \| 64k" $out/final/nsa_decode_bench.md | head -8
grep -E "^\| (7b|paper) \| (64k|128k)" $out/final/nsa_prefill_bench.md | head -4
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
