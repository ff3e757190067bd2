#!/usr/bin/env bash
# Runs every GPU test and benchmark on the GPU machine from a staged folder, writing full logs to
# OUT and a short summary last. Stage first, here:  bench/gpu/stage.sh   (makes stage/)
#   bench/gpu/run-all.sh OUT [--quick] [--only tests|bench|serving] [--parallel] [--tar]
# --tar: OUT becomes one OUT.tgz at the end (the device tool returns at most 8 files a call).
# --parallel: the tests part as four groups at once (nsa_prefill_test; model_gpu_test; the other
#   test binaries one after another; the PyTorch comparisons then the smoke): about 360 s on an
#   H200 instead of about 700 one after another. The benches always run alone, after the tests.
# NSA_GPU_TESTS="a b ...": only these test binaries in the tests part (default: every one).
# (serving: bench/serving/gpu-serving.sh, the 1.3b serving runs through both APIs, into OUT/serving)
set -uo pipefail
out=${1:?usage: run-all.sh OUT [--quick] [--only tests|bench|serving]}
shift
quick="" only="" tar=0 parallel=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=--quick ;;
    --only) only=$2; shift ;;
    --tar) tar=1 ;;
    --parallel) parallel=1 ;;
    *) echo "run-all.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
here=$(cd "$(dirname "$0")/../.." && pwd)
# cuBLASLt is not staged: take the machine's (CUDA toolkit, else the pip wheel torch uses).
cublas=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -e "$d/libcublasLt.so.13" ] && { cublas=$d; break; }
done
if [ -z "$cublas" ]; then
  f=$(python3 -c "import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))" 2>/dev/null)
  f=$(find "${f:-/usr}" -name 'libcublasLt.so.13' 2>/dev/null | head -1)
  [ -n "$f" ] && cublas=$(dirname "$f")
fi
export LD_LIBRARY_PATH=$here/stage/lib${cublas:+:$cublas}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
bin=$here/stage/bin
mkdir -p "$out"
cp "$here/stage/COMMIT" "$out/commit.txt" 2>/dev/null || true
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
echo "cuBLASLt from: ${cublas:-not found}" >> "$out/gpu.txt"
status=0
# The tests part's groups; each returns nonzero if anything in it failed.
run_tests() {  # the named test binaries, one after another
  local t rc=0
  for t in "$@"; do
    [ -x "$bin/$t" ] || continue
    "$bin/$t" > "$out/$t.log" 2>&1 || rc=1
  done
  return $rc
}
run_reference() {  # the CUDA runner against the independent PyTorch reference, then the server smoke
  local preset rc=0 models
  models=$(mktemp -d)
  for preset in tiny tiny-paper; do
    "$bin/nsa-model" create --preset $preset --out "$models/$preset" --seed 3 > /dev/null 2>&1
    python3 "$here/tests/reference/compare_logits.py" --model "$models/$preset" \
      --logits-tool "$here/bench/gpu/nsa-logits-cuda" --prompt-len 150 --num-decode 100 --seed 4 --rtol 0.1 \
      > "$out/torch_$preset.log" 2>&1 || rc=1
  done
  # The fla-340m and paper shapes with two layers (a float64 reference of 24-30 layers would take
  # too long), prompts past the window and the 16 selected blocks.
  for preset in fla-340m paper; do
    "$bin/nsa-model" create --preset $preset --num-layers 2 --out "$models/$preset" --seed 3 --quiet > /dev/null 2>&1
    timeout 200 python3 "$here/tests/reference/compare_logits.py" --model "$models/$preset" \
      --logits-tool "$here/bench/gpu/nsa-logits-cuda" --prompt-len 1100 --num-decode 50 --seed 4 --rtol 0.1 --timeout 900 \
      > "$out/torch_$preset.log" 2>&1 || rc=1
  done
  # The server on a GPU machine: the CUDA backend, a streamed completion over HTTP, drain.
  bash "$here/bench/gpu/server-smoke.sh" "$bin/nsa-server" "$here/stage/models/tiny" > "$out/server_smoke.log" 2>&1 || rc=1
  return $rc
}
if [ -z "$only" ] || [ "$only" = tests ]; then
  export NSA_TEST_MODEL_DIR=$here/stage/models/tiny
  tests=${NSA_GPU_TESTS:-nsa_decode_test nsa_prefill_test kv_write_test pdl_test model_ops_gpu_test sampling_gpu_test model_gpu_test engine_gpu_test}
  if [ $parallel = 1 ]; then
    # The two long binaries get a group each; the rest share one.
    long="" rest=""
    for t in $tests; do
      case $t in nsa_prefill_test|model_gpu_test) long="$long $t" ;; *) rest="$rest $t" ;; esac
    done
    pids=()
    for t in $long; do run_tests "$t" & pids+=($!); done
    run_tests $rest & pids+=($!)
    run_reference & pids+=($!)
    for p in "${pids[@]}"; do wait "$p" || status=1; done
  else
    run_tests $tests || status=1
    run_reference || status=1
  fi
fi
if [ -z "$only" ] || [ "$only" = bench ]; then
  "$bin/nsa_decode_bench" $quick > "$out/nsa_decode_bench.md" 2>&1 || status=1
  "$bin/nsa_decode_bench" $quick --prefill > "$out/nsa_prefill_bench.md" 2>&1 || status=1
  PYTHONUNBUFFERED=1 python3 "$here/bench/gpu/sdpa_decode.py" $quick > "$out/sdpa_decode.md" 2>&1 || status=1
  PYTHONUNBUFFERED=1 python3 "$here/bench/gpu/sdpa_prefill.py" $quick > "$out/sdpa_prefill.md" 2>&1 || status=1
  "$bin/e2e_decode_bench" $quick > "$out/e2e_decode_bench.md" 2>&1 || status=1
fi
if [ -z "$only" ] || [ "$only" = serving ]; then
  bash "$here/bench/serving/gpu-serving.sh" "$out/serving" > "$out/serving.log" 2>&1 || status=1
fi
# The machine-written block of bench/RESULTS.md; here: bench/results.py splice OUT/results-gpu.md
python3 "$here/bench/results.py" gpu "$out" > /dev/null || status=1
echo "== $(head -2 "$out/gpu.txt" | tail -1)"
grep -hE "^\[  (PASSED|FAILED)|tests ran|^\[ model \]|worst relative error" "$out"/*_test.log 2>/dev/null
tail -n 3 "$out"/torch_*.log "$out/server_smoke.log" 2>/dev/null
tail -n 40 "$out/serving.log" 2>/dev/null
cat "$out/nsa_decode_bench.md" "$out/sdpa_decode.md" "$out/nsa_prefill_bench.md" "$out/sdpa_prefill.md" "$out/e2e_decode_bench.md" 2>/dev/null
if [ $tar = 1 ]; then
  tar czf "$out.tgz" -C "$(dirname "$out")" "$(basename "$out")" && rm -rf "$out" || status=1
fi
exit $status
