#!/usr/bin/env bash
# Eighth session, call 3: what ncu says (main ffef11c): the prefill kernels at 7b 64k, the decode
# kernel at 7b 1 x 64k and 32 x 64k, and every kernel of 1.3b eager decode steps (1 x 512).
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
b=stage/bin; ncu=/usr/local/cuda/bin/ncu
mkdir -p $out; cp stage/COMMIT $out/commit.txt
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $out/gpu.txt
$ncu --version > $out/ncu-version.txt 2>&1
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
sec="--section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats --section WarpStateStats --section ComputeWorkloadAnalysis"
# Prefill: chunk 17 of 32 (positions 32k-34k) of each kernel.
NSA_BENCH_ONLY=7b:1:65536 timeout 200 $ncu -k regex:'CompressedPrefillKernel|SelectPrefillKernel|SelectedPrefillKernel|WindowPrefillKernel' \
  --launch-skip 64 --launch-count 4 $sec $b/nsa_decode_bench --prefill > $out/ncu-prefill-7b-64k.txt 2>&1; el prefill $?
NSA_BENCH_ONLY=7b:1:65536 timeout 60 $ncu -k regex:FusedKernel --launch-skip 5 --launch-count 1 $sec $b/nsa_decode_bench > $out/ncu-decode-7b-1x64k.txt 2>&1; el dec1 $?
NSA_BENCH_ONLY=7b:32:65536 timeout 60 $ncu -k regex:FusedKernel --launch-skip 5 --launch-count 1 $sec $b/nsa_decode_bench > $out/ncu-decode-7b-32x64k.txt 2>&1; el dec32 $?
# Every kernel of the first eager 1.3b steps (1 x 512): duration, DRAM bytes and throughput.
timeout 240 $ncu -k regex:'SmallGemm|RmsNorm|QkvSplit|KvWrite|Summary|Fused|Embed|Sample|Lse|Combine|Score|Segment|Compressed|ToBf16' \
  --launch-count 700 --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size,sm__warps_active.avg.pct_of_peak_sustained_active \
  --csv $b/e2e_decode_bench --profile > $out/ncu-e2e-1.3b.csv 2> $out/ncu-e2e-1.3b.err; el e2e $?
ls -la $out
grep -E "Duration|DRAM Throughput|Memory Throughput|L2 Cache Throughput|Achieved Occupancy|Registers Per|Compute \(SM\) Throughput|^  [A-Za-z]+Kernel" $out/ncu-prefill-7b-64k.txt | head -60
