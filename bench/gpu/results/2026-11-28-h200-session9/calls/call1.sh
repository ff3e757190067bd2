#!/usr/bin/env bash
# Ninth session, call 1: main a2cfd36's GPU tests (its launch checks were compiled, not run, last
# session), then wip/gemm-preload: its op test and e2e --quick A/B (P = 0/2/4 weight vectors a lane
# before the PDL wait; the decode kernel's early successor on/off) against main in the same call.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
b=$here/stage/bin; p=$here/stage/preload; mkdir -p $out
for x in stage $p; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $out/gpu.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
for t in model_ops_gpu_test kv_write_test pdl_test sampling_gpu_test engine_gpu_test nsa_decode_test; do
  timeout 90 $b/$t > $out/main-$t.log 2>&1; el $t $?
done
timeout 200 $b/nsa_prefill_test --gtest_filter='*128k*' > $out/main-nsa_prefill_test-128k.log 2>&1 &
pf=$!
timeout 250 $b/model_gpu_test > $out/main-model_gpu_test.log 2>&1; el model $?
wait $pf; el prefill-128k $?
timeout 60 $p/model_ops_gpu_test > $out/preload-model_ops_gpu_test.log 2>&1; el preload-ops $?
for i in 1 2; do
  timeout 40 $b/e2e_decode_bench --quick > $out/e2e-main-$i.md 2>&1; el e2e-main $?
  for P in 0 2 4; do
    NSA_SMALL_GEMM_PRELOAD=$P timeout 40 $p/e2e_decode_bench --quick > $out/e2e-p$P-$i.md 2>&1; el e2e-p$P $?
  done
  NSA_DECODE_EARLY_SUCCESSOR=0 timeout 40 $p/e2e_decode_bench --quick > $out/e2e-p4-late-$i.md 2>&1; el e2e-p4-late $?
done
timeout 250 $p/model_gpu_test > $out/preload-model_gpu_test.log 2>&1; el preload-model $?
grep -HE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log; grep -h "FAILED  \]" $out/*.log | head
for f in $out/e2e-*.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|8 x 65536|32 x 65536|1 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
