#!/usr/bin/env bash
# Black-box checks of the command-line tools on the tiny test model: they stream text, a seed
# reproduces its output, and every bad input gets exit status 1 and a message naming the problem.
#   cli_test.sh BIN_DIR MODEL_DIR
set -u
bin=$1 model=$2
gen="$bin/server/nsa-generate"
tool="$bin/models/nsa-model"
failures=0 passed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

check() {  # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); else echo "FAIL: $name"; failures=$((failures + 1)); fi
}

# expect_error NAME PATTERN CMD...: exit status 1 and PATTERN on stderr.
expect_error() {
  local name=$1 pattern=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [[ $rc -ne 1 ]] || ! grep -q -- "$pattern" "$tmp/err"; then
    echo "FAIL: $name (exit $rc, stderr: $(head -c 300 "$tmp/err"))"
    failures=$((failures + 1))
  else
    passed=$((passed + 1))
  fi
}

"$gen" --model "$model" --prompt "The license" --max-tokens 40 --seed 3 --ignore-eos >"$tmp/a" 2>"$tmp/a.err"
check "generate exits 0" test $? -eq 0
check "output starts with the prompt" grep -q "^The license" "$tmp/a"
check "output has generated text" test "$(wc -c <"$tmp/a")" -gt 20
check "timing on stderr" grep -q "tok/s decode" "$tmp/a.err"
"$gen" --model "$model" --prompt "The license" --max-tokens 40 --seed 3 --ignore-eos --quiet >"$tmp/b" 2>/dev/null
check "same seed, same text" cmp -s "$tmp/a" "$tmp/b"
"$gen" --model "$model" --prompt "The license" --max-tokens 40 --seed 4 --ignore-eos --quiet >"$tmp/c" 2>/dev/null
differs() { ! cmp -s "$1" "$2"; }
check "other seed, other text" differs "$tmp/a" "$tmp/c"
"$gen" --model "$model" --prompt "Hello" --max-tokens 20 --temperature 0 --top-p 0.5 --quiet >"$tmp/d" 2>/dev/null
check "greedy with hyphenated flags" test $? -eq 0

expect_error "negative temperature" "temperature" "$gen" --model "$model" --prompt x --temperature -1
expect_error "top-p zero" "top_p" "$gen" --model "$model" --prompt x --top-p 0
expect_error "max-tokens zero" "max_tokens" "$gen" --model "$model" --prompt x --max-tokens 0
expect_error "context overflow" "maximum context length is 4096" "$gen" --model "$model" --prompt x --max-tokens 5000
expect_error "missing model" "/nonexistent/dir" "$gen" --model /nonexistent/dir --prompt x
expect_error "unknown preset" "unknown preset \"13b\"" "$tool" create --preset 13b --out "$tmp/m"
expect_error "bad dtype" "--dtype" "$tool" create --preset tiny --dtype int4 --out "$tmp/m"
expect_error "tiny tokenizer vocab" "--tokenizer_vocab" "$tool" create --preset tiny --tokenizer-vocab 10 --out "$tmp/m" --quiet
# --random-weights: a preset's random weights in memory equal the checkpoint nsa-model writes for
# the same seed (the same text for the same sampling seed), and another seed gives another model.
tok="$model/tokenizer.model"
"$tool" create --preset tiny --seed 3 --tokenizer "$tok" --out "$tmp/rw" --quiet >/dev/null 2>&1
"$gen" --model "$tmp/rw" --prompt "The license" --max-tokens 24 --seed 1 --ignore-eos --quiet >"$tmp/rw_file" 2>/dev/null
"$gen" --random-weights tiny --random-weights-seed 3 --tokenizer "$tok" --prompt "The license" --max-tokens 24 --seed 1 \
  --ignore-eos --quiet >"$tmp/rw_mem" 2>/dev/null
check "random weights run" test $? -eq 0
check "random weights = the written checkpoint" cmp -s "$tmp/rw_file" "$tmp/rw_mem"
"$gen" --random-weights tiny --random-weights-seed 4 --tokenizer "$tok" --prompt "The license" --max-tokens 24 --seed 1 \
  --ignore-eos --quiet >"$tmp/rw_other" 2>/dev/null
check "another weights seed, another model" differs "$tmp/rw_mem" "$tmp/rw_other"
expect_error "unknown random-weights preset" "unknown preset \"13b\"" "$gen" --random-weights 13b --tokenizer "$tok" --prompt x
expect_error "missing tokenizer" "/nonexistent/t.model" "$gen" --random-weights tiny --tokenizer /nonexistent/t.model --prompt x
# The server on random weights: the preset's name served, a completion streamed over HTTP.
"$bin/server/nsa-server" --random-weights tiny --tokenizer "$tok" --backend cpu --host 127.0.0.1 --grpc-port 0 \
  --http-port 0 --metrics-port 0 >"$tmp/srv" 2>&1 &
srv=$!
for _ in $(seq 1 100); do grep -q " ready$" "$tmp/srv" && break; sleep 0.1; done
http=$(sed -nE 's/.* http ([^ ]+) ready$/\1/p' "$tmp/srv")
curl -s "http://$http/v1/models" >"$tmp/models"
check "server names the preset" grep -q '"id":"tiny"' "$tmp/models"
curl -s "http://$http/v1/completions" -H 'Content-Type: application/json' \
  -d '{"model": "tiny", "prompt": "The license", "max_tokens": 8, "ignore_eos": true}' >"$tmp/completion"
check "server completes on random weights" grep -q '"completion_tokens":8' "$tmp/completion"
check "server logs the random weights" grep -q "random weights of preset tiny, seed 0" "$tmp/srv"
kill -TERM $srv; wait $srv
check "server drains and exits 0" test $? -eq 0
expect_error "server: unknown preset" "unknown preset \"13b\"" "$bin/server/nsa-server" --random-weights 13b --tokenizer "$tok" \
  --grpc-port 0 --http-port 0 --metrics-port 0

"$bin/models/nsa-model" check --model "$model" --quiet >"$tmp/check" 2>&1
check "check accepts the model" grep -q ": ok:" "$tmp/check"
"$gen" --model "$model" --prompt x --temprature 1 >/dev/null 2>"$tmp/err"
check "unknown flag is refused" test $? -ne 0

echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
