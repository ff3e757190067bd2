#!/usr/bin/env bash
# Runs every GPU test and benchmark on the GPU machine from a staged folder, writing full logs to
# OUT and a short summary last. Stage first, here:  bench/gpu/stage.sh   (makes stage/)
#   bench/gpu/run-all.sh OUT [--quick]
set -uo pipefail
out=${1:?usage: run-all.sh OUT [--quick]}
quick=${2:-}
here=$(cd "$(dirname "$0")/../.." && pwd)
export LD_LIBRARY_PATH=$here/stage/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
status=0
"$here/stage/bin/nsa_decode_test" --gtest_brief=0 > "$out/nsa_decode_test.log" 2>&1 || status=1
"$here/stage/bin/kv_write_test" > "$out/kv_write_test.log" 2>&1 || status=1
"$here/stage/bin/nsa_decode_bench" $quick > "$out/nsa_decode_bench.md" 2>&1 || status=1
PYTHONUNBUFFERED=1 python3 "$here/bench/gpu/sdpa_decode.py" $quick > "$out/sdpa_decode.md" 2>&1 || status=1
echo "== $(cat "$out/gpu.txt" | tail -1)"
grep -E "^\[  (PASSED|FAILED)|tests ran" "$out/nsa_decode_test.log" "$out/kv_write_test.log"
grep -E "worst relative error" "$out/kv_write_test.log"
cat "$out/nsa_decode_bench.md" "$out/sdpa_decode.md"
exit $status
