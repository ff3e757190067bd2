#!/usr/bin/env bash
# The serving figures of 1.3b on the GPU machine, from bench/gpu/stage.sh's stage/ (README.md,
# "On the GPU machine"): a random-weight 1.3b model, then three server runs through both APIs
# (serve-and-sweep.sh), each with the server's /metrics beside the client's counts:
#   sweep/    rates 2, 8, 32 and inf: 64 prompts of 1,024 tokens, 128 output tokens, 4 warm-ups
#   streams/  1,000 requests at once (16-token prompts, 32 output tokens): every stream completes
#   s256/     256 requests at once (128-token prompts, 256 output tokens, no warm-ups, so the
#             server's mean step is this run's): the client's inter-token latency against the
#             engine's mean step (server metrics) at 256 streams
# The PNG is drawn where gnuplot is (here: sweep.sh --plot-only OUT/sweep).
#   bench/serving/gpu-serving.sh OUT
set -uo pipefail
out=${1:?usage: gpu-serving.sh OUT}
here=$(cd "$(dirname "$0")/../.." && pwd)
cublas=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -e "$d/libcublasLt.so.13" ] && { cublas=$d; break; }
done
export LD_LIBRARY_PATH=$here/stage/lib${cublas:+:$cublas}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
bin=$here/stage/bin
model=${NSA_SERVING_MODEL_DIR:-/tmp/m-1.3b}
mkdir -p "$out"
if [ ! -e "$model/config.json" ]; then
  "$bin/nsa-model" create --preset 1.3b --out "$model" --tokenizer "$here/stage/models/tiny/tokenizer.model" \
    --seed 1 --quiet > "$out/create.log" 2>&1 || { cat "$out/create.log"; exit 1; }
fi
status=0
run() {  # NAME RATES GENERATOR-FLAGS...
  local name=$1 rates=$2
  shift 2
  local s=$(date +%s)
  bash "$here/bench/serving/serve-and-sweep.sh" --server "$bin/nsa-server" --model "$model" \
    --bench "$bin/nsa-bench-serving" --out "$out/$name" --rates "$rates" -- "$@" > "$out/$name.log" 2>&1 || status=1
  echo "== $name ($(( $(date +%s) - s )) s)"
}
run sweep "2 8 32 inf" --num-prompts 64 --input-len 1024 --output-len 128 --num-warmups 4 --seed 1 \
  --goodput ttft:500,tpot:50
run streams inf --num-prompts 1000 --input-len 16 --output-len 32 --num-warmups 2 --seed 2
run s256 inf --num-prompts 256 --input-len 128 --output-len 256 --seed 3
for name in sweep streams s256; do
  for f in "$out/$name"/*.txt; do
    [ -e "$f" ] || continue
    echo "-- $name/$(basename "$f")"
    grep -E "Successful|Failed|throughput \(tok|Median (TTFT|ITL)|Mean (TTFT|ITL)|P99 TTFT|Counts agree|engine step|Engine steps" "$f"
  done
done
exit $status
