#!/usr/bin/env bash
# Eighth session, call 2: the decode review fixes without the prefetch (wip/decode-review) and
# the wgmma branch with explicit rounding (wip/prefill-wgmma e815516): tests, then the bench.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
b=stage/bin; d=stage/wip-decode-review; w=stage/wip-prefill-wgmma
mkdir -p $out; for x in stage $d $w; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $out/gpu.txt
ls /usr/local/cuda/bin > $out/cuda-bin.txt 2>&1
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
timeout 60 $d/nsa_decode_test > $out/review-nsa_decode_test.log 2>&1; el review-dtest $?
timeout 40 $b/e2e_decode_bench --quick > $out/e2e-main.md 2>&1; el e2e-main $?
timeout 40 $d/e2e_decode_bench --quick > $out/e2e-review.md 2>&1; el e2e-review $?
NSA_BENCH_WGMMA=1 timeout 60 $w/nsa_decode_bench --prefill > $out/wgmma-prefill-bench.md 2>&1; el wgmma-bench $?
timeout 200 $w/nsa_prefill_test --gtest_filter='*Wgmma*:-*128k*' > $out/wgmma-nsa_prefill_test.log 2>&1; el wgmma-test $?
grep -hE "^\[  (PASSED|FAILED)  \] [0-9]" $out/*.log
grep -h "differ" $out/wgmma-nsa_prefill_test.log | sort | uniq -c | head -20
for f in e2e-main e2e-review; do echo "== $f"; grep -E "^\| [0-9]" $out/$f.md; done
grep "^| " $out/wgmma-prefill-bench.md | cut -d"|" -f2-6,9-11
