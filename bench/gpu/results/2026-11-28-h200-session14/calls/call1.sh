#!/usr/bin/env bash
# Fourteenth session, call 1: where a decode tile's time goes. main c0bb5ef (b4a87bd's kernels)
# against diagnostic builds of the same commit (bench/gpu/stage-diag.sh; NSA_DECODE_DIAG masks:
# 1 no page-table reads, 2 no tile computation, 4 no wait for the copies, 7 all three), alternating
# x2: quick decode tables, traces of 7b 32 x 64k, 7b 1 x 64k and paper 32 x 64k, e2e --quick.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv > /dev/null 2>&1
mkdir -p $out; nvidia-smi --query-gpu=name,driver_version --format=csv > $out/gpu.txt 2>&1
for d in bin diag-1 diag-2 diag-4 diag-7; do echo "$d $(cat stage/$d/COMMIT 2>/dev/null || cat stage/COMMIT)"; done > $out/commits.txt
t0=$(date +%s)
bash bench/gpu/compare.sh $out/cmp --rounds 2 --trace 7b:32:65536 --trace 7b:1:65536 --trace paper:32:65536 \
  main:stage/bin diag1:stage/diag-1 diag2:stage/diag-2 diag4:stage/diag-4 diag7:stage/diag-7 > $out/summary.txt 2>&1
echo "compare rc=$? $(( $(date +%s)-t0 ))s" >> $out/summary.txt
cat $out/summary.txt
for f in $out/cmp/trace-*-1.txt; do echo "== $(basename $f)"; grep -E "trace (compressed|window|score|selected|combine)|merged" $f | cut -c1-120; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
