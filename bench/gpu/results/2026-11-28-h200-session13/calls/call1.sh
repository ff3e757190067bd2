#!/usr/bin/env bash
# Thirteenth session, call 1 (diagnostics on main 202e1d7 = d4a5803's kernels): the decode kernel's
# per-instruction counts (ncu SourceCounters, -lineinfo build) at 7b 32 x 64k, paper 32 x 64k and
# 7b 8 x 64k; the prefill selected branch's at 7b 64k; traces at batch 8 / 32; SASS with line info;
# and the twelfth session's warp-split fault: nvdisasm of the failing and passing cubins.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
b=$here/stage/bin; ncu=/usr/local/cuda/bin/ncu; cb=/usr/local/cuda/bin
mkdir -p $out; cp stage/COMMIT $out/commit.txt; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $out/gpu.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
for s in 7b:8:65536 7b:32:65536 paper:8:65536 paper:32:65536 7b:1:65536; do
  NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=$s timeout 30 $b/nsa_decode_bench > $out/trace-${s//:/-}.txt 2>&1
done; el traces $?
# SASS with line info of the -lineinfo build, and of the two prefill cubins.
mkdir -p $out/sass && cd $out/sass
$cb/cuobjdump -xelf all $b/nsa_decode_bench_li > /dev/null 2>&1; ls > list.txt
for f in *.cubin; do $cb/nvdisasm -g -c $f > ${f%.cubin}.sass 2> ${f%.cubin}.err; done
for f in $here/stage/pws/*.cubin; do $cb/nvdisasm -g -c $f > pws-$(basename ${f%.cubin}).sass 2>&1; done
rm -f *.cubin; gzip *.sass; cd $here; el sass 0
for s in 7b:32:65536 paper:32:65536 7b:8:65536 7b:1:65536; do
  NSA_BENCH_ONLY=$s timeout 150 $ncu --clock-control none -k regex:FusedKernel --launch-skip 5 --launch-count 1 \
    --section SourceCounters --section WarpStateStats --section SpeedOfLight --page source --print-source sass --csv \
    $b/nsa_decode_bench_li > $out/ncu-src-${s//:/-}.csv 2> $out/ncu-src-${s//:/-}.err; el ncu-$s $?
done
NSA_BENCH_ONLY=7b:1:65536 timeout 150 $ncu --clock-control none -k regex:SelectedPrefill --launch-skip 2 --launch-count 1 \
  --section SourceCounters --page source --print-source sass --csv $b/nsa_decode_bench_li --prefill \
  > $out/ncu-src-prefill-selected.csv 2> $out/ncu-src-prefill.err; el ncu-prefill $?
NSA_BENCH_ONLY=7b:32:65536 timeout 150 $ncu --clock-control none -k regex:FusedKernel --launch-skip 5 --launch-count 1 \
  --section SpeedOfLight --section WarpStateStats --section Occupancy --section MemoryWorkloadAnalysis $b/nsa_decode_bench_li > $out/ncu-details-7b-32.txt 2>&1; el ncu-details $?
gzip $out/*.csv
ls -la $out $out/sass
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
