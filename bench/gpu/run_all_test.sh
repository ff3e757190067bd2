#!/usr/bin/env bash
# Checks bench/gpu/run-all.sh's tests part without a GPU: stand-in test binaries, model tool,
# PyTorch comparison and smoke in a scratch tree. Asserts that --parallel runs the long binaries
# beside the rest (wall time), that every log is written, and that a failing binary fails the
# run in both forms.
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)/run-all.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
mkdir -p "$tmp/bench/gpu" "$tmp/stage/bin" "$tmp/stage/models/tiny" "$tmp/tests/reference"
cp "$src" "$tmp/bench/gpu/run-all.sh"
echo test > "$tmp/stage/COMMIT"
tests="nsa_decode_test nsa_prefill_test kv_write_test pdl_test model_ops_gpu_test sampling_gpu_test model_gpu_test engine_gpu_test"
stand_in() {  # NAME SECONDS EXIT
  printf '#!/bin/bash\nsleep %s\necho "[  PASSED  ] 1 test."\nexit %s\n' "$2" "$3" > "$tmp/stage/bin/$1"
  chmod +x "$tmp/stage/bin/$1"
}
for t in $tests; do stand_in "$t" 0 0; done
stand_in nsa_prefill_test 2 0
stand_in model_gpu_test 2 0
stand_in nsa_decode_test 2 0
stand_in nsa-model 0 0
echo 'print("PASS: stand-in")' > "$tmp/tests/reference/compare_logits.py"
echo 'echo "PASS: stand-in smoke"' > "$tmp/bench/gpu/server-smoke.sh"
echo 'import sys' > "$tmp/bench/results.py"

# All pass, in parallel: the three 2 s binaries overlap (one after another they take 6 s).
start=$(date +%s%N)
bash "$tmp/bench/gpu/run-all.sh" "$tmp/out1" --only tests --parallel > /dev/null || fail "parallel run with every test passing exited nonzero"
took=$(( ($(date +%s%N) - start) / 1000000 ))  # ms
[ "$took" -lt 5000 ] || fail "parallel run took ${took} ms: the groups did not overlap"
for t in $tests; do [ -s "$tmp/out1/$t.log" ] || fail "no log for $t"; done
for f in torch_tiny torch_tiny-paper torch_fla-340m torch_paper server_smoke; do
  [ -s "$tmp/out1/$f.log" ] || fail "no log $f"
done

# One failing binary fails the run, in parallel and one after another.
stand_in pdl_test 0 1
if bash "$tmp/bench/gpu/run-all.sh" "$tmp/out2" --only tests --parallel > /dev/null; then fail "parallel run ignored a failing test"; fi
if bash "$tmp/bench/gpu/run-all.sh" "$tmp/out3" --only tests > /dev/null; then fail "sequential run ignored a failing test"; fi
# Unknown arguments are refused.
if bash "$tmp/bench/gpu/run-all.sh" "$tmp/out4" --paralel > /dev/null 2>&1; then fail "an unknown argument was accepted"; fi
echo "PASS: run-all.sh tests part (parallel ${took} ms)"
