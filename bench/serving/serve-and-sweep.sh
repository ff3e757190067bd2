#!/usr/bin/env bash
# Starts nsa-server on loopback (ports picked by the kernel), waits for its ready line, runs
# sweep.sh through both APIs with the server's /metrics, then stops the server with SIGTERM.
# For the GPU machine (bench/serving/README.md) as much as for the CPU server here.
#
#   bench/serving/serve-and-sweep.sh --server BIN --model DIR --out DIR [--bench BIN]
#       [--rates "1 2 4 8"] [--server-args "--max-model-len 66000 ..."] [-- GENERATOR FLAGS...]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
server="" model="" out="" bench="" rates="1 2 4 8" server_args=""
while (($#)); do
  case "$1" in
    --server) server="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --bench) bench="$2"; shift 2 ;;
    --rates) rates="$2"; shift 2 ;;
    --server-args) server_args="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "serve-and-sweep.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n "$server" && -n "$model" && -n "$out" ]] || { echo "serve-and-sweep.sh: --server, --model and --out are required" >&2; exit 2; }
mkdir -p "$out"
log="$out/server.log"
# shellcheck disable=SC2086  # server_args is a list of flags
"$server" --model "$model" --host 127.0.0.1 --grpc-port 0 --metrics-port 0 --http-port 0 $server_args > "$log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT
# Loading a large model takes a while: wait for the ready line or the process to end.
while ! grep -q " ready$" "$log"; do
  kill -0 $pid 2>/dev/null || { cat "$log" >&2; echo "serve-and-sweep.sh: nsa-server exited before it was ready" >&2; exit 1; }
  sleep 0.2
done
line=$(grep " ready$" "$log")
grpc=$(sed -E 's/.*grpc ([^ ]+) .*/\1/' <<< "$line")
metrics=$(sed -E 's/.* metrics ([^ ]+) .*/\1/' <<< "$line")
http=$(sed -E 's/.* http ([^ ]+) ready/\1/' <<< "$line")
echo "serve-and-sweep.sh: $line" >&2
"$here/sweep.sh" ${bench:+--bench "$bench"} --grpc "$grpc" --http "$http" --metrics "http://$metrics/metrics" \
  --rates "$rates" --out "$out" -- "$@"
trap - EXIT
kill -TERM $pid
wait $pid
