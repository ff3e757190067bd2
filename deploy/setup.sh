#!/usr/bin/env bash
# The first command for a new user: installs what is missing, builds, writes the embedded default
# model (the `tiny` preset with a tokenizer trained on English text shipped with Debian), streams
# a sample completion, then serves the model: gRPC on :50051, the OpenAI-compatible HTTP API on
# :8000, Prometheus metrics on :9400.
#
#   deploy/setup.sh                       sample text, then serve (Ctrl-C or SIGTERM drains, exits)
#   deploy/setup.sh serve [flags]         serve only (flags go to nsa-server)
#   deploy/setup.sh generate [flags]      generate only (flags go to nsa-generate), e.g.
#                                         deploy/setup.sh generate --prompt "Hello" --max-tokens 100
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/build.sh

model=build/models/tiny
if [[ ! -f $model/tokenizer.model || ! -f $model/model.safetensors ]]; then
  build/models/nsa-model create --preset tiny --seed 0 --out "$model"
fi

mode=${1:-demo}
[[ $# -gt 0 ]] && shift
case $mode in
  generate)
    exec build/server/nsa-generate --model "$model" "$@" ;;
  serve)
    exec build/server/nsa-server --model "$model" "$@" ;;
  demo)
    echo "--- sample: nsa-generate --prompt \"Permission is hereby granted\" --max-tokens 48 ---" >&2
    build/server/nsa-generate --model "$model" --prompt "Permission is hereby granted" --max-tokens 48 --quiet
    echo "--- serving: gRPC 0.0.0.0:50051 (nsa.v1.Generation), OpenAI API http://0.0.0.0:8000/v1, metrics :9400/metrics ---" >&2
    echo "--- try: curl localhost:8000/v1/completions -d '{\"prompt\": \"Hello\", \"max_tokens\": 20}' ---" >&2
    exec build/server/nsa-server --model "$model" ;;
  *)
    echo "usage: deploy/setup.sh [serve|generate] [flags]" >&2
    exit 2 ;;
esac
