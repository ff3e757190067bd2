#!/usr/bin/env bash
# Eleventh session, call 2: wip/combine-inflight (the selection's top picks by rank, the combine's
# loads in flight with its merge factors, the by-keys merge two channels a step) against main:
# its nsa_decode_test, alternating quick decode tables and e2e --quick, the fused kernel's trace at
# batch 1, then its model_gpu_test.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
m=$here/stage/bin; c=$here/stage/wip-combine-inflight; mkdir -p $out; cp stage/COMMIT $out/commit.txt
for x in $here/stage $c; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $out/gpu.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
timeout 90 $c/nsa_decode_test > $out/inflight-nsa_decode_test.log 2>&1; el decode-test $?
for i in 1 2 3; do
  for v in main:$m inflight:$c; do
    timeout 60 ${v#*:}/nsa_decode_bench --quick > $out/dbench-${v%%:*}-$i.md 2>&1
  done
done; el dbench 0
for i in 1 2; do
  for v in main:$m inflight:$c; do
    timeout 40 ${v#*:}/e2e_decode_bench --quick > $out/e2e-${v%%:*}-$i.md 2>&1
  done
done; el e2e 0
for i in 1 2; do
  for s in 7b:1:65536 paper:1:65536 7b:1:1024; do
    for v in main:$m inflight:$c; do
      NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=$s timeout 30 ${v#*:}/nsa_decode_bench > $out/trace-${v%%:*}-${s//:/-}-$i.txt 2>&1
    done
  done
done; el trace 0
timeout 250 $c/model_gpu_test > $out/inflight-model_gpu_test.log 2>&1; el model $?
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
for f in $out/dbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';')"; done
for f in $out/e2e-*-?.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
for f in $out/trace-*.txt; do echo "== $(basename $f)"; grep -E "trace|^\| (7b|paper)" $f | cut -c1-150; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
