#!/usr/bin/env bash
# The first command for a new user: installs what is missing, builds, writes the embedded default
# model (the `tiny` preset with a tokenizer trained on English text shipped with Debian) and
# generates text with it. Extra arguments go to nsa-generate, e.g.
#   deploy/setup.sh --prompt "The software is provided" --max-tokens 100 --temperature 0.7
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/build.sh

model=build/models/tiny
if [[ ! -f $model/tokenizer.model || ! -f $model/model.safetensors ]]; then
  build/models/nsa-model create --preset tiny --seed 0 --out "$model"
fi

if [[ $# -eq 0 ]]; then
  set -- --prompt "Permission is hereby granted" --max-tokens 64
fi
echo "--- nsa-generate --model $model $* ---" >&2
exec build/server/nsa-generate --model "$model" "$@"
