#!/usr/bin/env bash
# On the GPU machine: nsa-server must pick the CUDA backend by itself, stream a completion over
# HTTP, and drain on SIGTERM with exit 0.   server-smoke.sh NSA_SERVER MODEL_DIR
set -uo pipefail
server=${1:?} model=${2:?}
log=$(mktemp)
start() {  # start METRICS_PORT
  "$server" --model "$model" --grpc-port 0 --metrics-port "$1" --http-port 0 --host 127.0.0.1 --gpu-memory-utilization 0.5 \
    > "$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    grep -q " ready" "$log" && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.2
  done
  cat "$log"
}
start 0
if ! grep -q " ready" "$log"; then
  echo "-- retry with a fixed metrics port; loopback check:"
  python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print('python bound', s.getsockname())"
  start 29400
fi
http=$(grep -o "http 127.0.0.1:[0-9]*" "$log" | head -1 | cut -d: -f2)
[ -n "$http" ] || { echo "FAIL: the server did not start"; exit 1; }
grep -q "CUDA backend" "$log" || { echo "FAIL: the server did not pick the CUDA backend"; kill $pid; exit 1; }
body='{"model":"tiny","prompt":"The license","max_tokens":24,"temperature":0,"stream":true}'
resp=$(curl -sS -N -H 'Content-Type: application/json' -d "$body" "http://127.0.0.1:$http/v1/completions")
echo "$resp" | tail -n 4
chunks=$(echo "$resp" | grep -c '^data: {')
echo "$resp" | grep -q '^data: \[DONE\]' || { echo "FAIL: no [DONE]"; kill $pid; exit 1; }
metrics=$(grep -o "metrics 127.0.0.1:[0-9]*" "$log" | head -1 | cut -d: -f2)
curl -sS "http://127.0.0.1:$metrics/metrics" | grep -E "^vllm:generation_tokens_total" || true
kill -TERM $pid
wait $pid
rc=$?
echo "streamed $chunks chunks; exit code after SIGTERM: $rc"
[ "$rc" = 0 ] && [ "$chunks" -ge 2 ] && echo "PASS: server smoke on the CUDA backend"
