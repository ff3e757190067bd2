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
"$bin/models/nsa-model" check --model "$model" --quiet >"$tmp/check" 2>&1
check "check accepts the model" grep -q ": ok:" "$tmp/check"
"$gen" --model "$model" --prompt x --temprature 1 >/dev/null 2>"$tmp/err"
check "unknown flag is refused" test $? -ne 0

echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
