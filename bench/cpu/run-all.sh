#!/usr/bin/env bash
# Every CPU-machine figure of bench/RESULTS.md, regenerated: the CPU reference's decode and
# prefill speed, the host-side cache and scheduler costs, and the serving benchmark (both APIs and
# a sweep with its PNG) against the CPU server with the tiny model. Raw outputs go to OUT; the
# generated block of bench/RESULTS.md is replaced (bench/results.py).
#   bench/cpu/run-all.sh OUT [--quick]        (after deploy/build.sh)
set -euo pipefail
out=${1:?usage: run-all.sh OUT [--quick]}
quick=${2:-}
here=$(cd "$(dirname "$0")/../.." && pwd)
build=$here/build
mkdir -p "$out"
git -C "$here" rev-parse --short HEAD > "$out/commit.txt"
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(. /etc/os-release; echo "$PRETTY_NAME")" \
  > "$out/machine.txt"
min_time=1
[ "$quick" = --quick ] && min_time=0.1
for b in cpu_decode_bench kv_cache_bench scheduler_bench; do
  "$build/bench/$b" --benchmark_min_time="$min_time" --benchmark_format=json --benchmark_out="$out/$b.json" \
    --benchmark_out_format=json > "$out/$b.txt"
done

# Serving: the tiny model on the CPU server, the same load through gRPC and HTTP, then a sweep.
model=$build/tests/models/tiny
[ -f "$model/tokenizer.model" ] || "$build/models/nsa-model" create --preset tiny --seed 7 --out "$model" --quiet
log=$out/server.log
"$build/server/nsa-server" --model "$model" --host 127.0.0.1 --grpc-port 0 --metrics-port 0 --http-port 0 > "$log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do grep -q " ready" "$log" && break; sleep 0.1; done
port() { grep -o "$1 127.0.0.1:[0-9]*" "$log" | head -1 | cut -d: -f2; }
prompts=200
[ "$quick" = --quick ] && prompts=40
flags="--num-prompts $prompts --input-len 256 --output-len 32 --request-rate 10 --num-warmups 4 --goodput ttft:100,tpot:20"
echo "nsa-bench-serving --backend grpc|openai $flags --seed 101|102 (after an openai pass with --seed 100)" > "$out/serving_command.txt"
# A fresh server's first requests touch its KV pool's memory for the first time (page faults):
# one unmeasured pass of the same load first, so the order of the two APIs does not matter.
# Each pass sends prompts of its own (its own --seed): a repeated prompt would be served from the
# prefix cache and make the later pass look faster.
# shellcheck disable=SC2086
"$build/bench/serving/nsa-bench-serving" --backend openai --port "$(port http)" $flags --seed 100 > "$out/serving_warmup.txt"
seed=101
for api in grpc openai; do
  p=$(port grpc)
  [ $api = openai ] && p=$(port http)
  # shellcheck disable=SC2086
  "$build/bench/serving/nsa-bench-serving" --backend $api --port "$p" $flags --seed $seed \
    --metrics-url "http://127.0.0.1:$(port metrics)/metrics" --result-json "$out/serving_$api.json" > "$out/serving_$api.txt"
  seed=$((seed + 1))
done
"$here/bench/serving/sweep.sh" --grpc "127.0.0.1:$(port grpc)" --http "127.0.0.1:$(port http)" --rates "2 5 10 20" \
  --out "$out/sweep" --bench "$build/bench/serving/nsa-bench-serving" -- --num-prompts $((prompts / 2)) --input-len 256 \
  --output-len 32 --num-warmups 2 > "$out/sweep.txt" 2>&1
kill -TERM $server
wait $server || true
trap - EXIT

# The run's small files are kept in the repository beside the generated block that cites them.
archive=bench/cpu/results/$(date +%F)-$(cat "$out/commit.txt")
mkdir -p "$here/$archive"
cp "$out"/{machine.txt,cpu_decode_bench.txt,kv_cache_bench.txt,scheduler_bench.txt,serving_grpc.txt,serving_openai.txt} \
  "$out/serving_command.txt" "$here/$archive/"
cp "$out/sweep/sweep.tsv" "$here/$archive/" 2>/dev/null || true
cp "$out/sweep/sweep.png" "$here/$archive/" 2>/dev/null || true
python3 "$here/bench/results.py" cpu "$out" --archive "$archive"
cp "$out/results-cpu.md" "$here/$archive/"
python3 "$here/bench/results.py" splice "$out/results-cpu.md"
