#!/usr/bin/env bash
# Checks bench/gpu/compare.sh without a GPU: two stand-in builds whose benches log every call
# and print a one-row table. Asserts the builds alternate round by round, every run writes its
# file with its arguments and environment, the summary carries each build's rows, a failing
# bench fails the run, and bad arguments are refused before anything runs.
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)/compare.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
calls=$tmp/calls.log
stand_in() {  # DIR NAME VALUE EXIT: a bench printing a row with VALUE, appending its call to $calls
  mkdir -p "$1"
  cat > "$1/$2" <<EOF
#!/bin/bash
echo "$1 $2 \$* only=\${NSA_BENCH_ONLY:-} trace=\${NSA_BENCH_TRACE:-} x=\${NSA_X:-} y=\${NSA_Y:-}" >> "$calls"
echo "| 7b | 1 | 64k | $3 |"
echo "| 1 x 512 | $3 |"
[ -n "\${NSA_BENCH_TRACE:-}" ] && echo "  trace combine 64 tasks: last end $3 us"
exit $4
EOF
  chmod +x "$1/$2"
}
for b in A B; do
  stand_in "$tmp/$b" nsa_decode_bench "1$b" 0
  stand_in "$tmp/$b" e2e_decode_bench "2$b" 0
done

bash "$src" "$tmp/out1" --rounds 2 --prefill --trace 7b:1:65536 a:"$tmp/A" b:"$tmp/B" > "$tmp/summary1" ||
  fail "a run whose benches all pass exited nonzero"
# Order: round 1 of a (quick, trace, 2 prefills, e2e), round 1 of b, then round 2 of both.
order=$(cut -d' ' -f1,2 "$calls" | sed "s|$tmp/||" | tr '\n' ',')
want="A nsa_decode_bench,A nsa_decode_bench,A nsa_decode_bench,A nsa_decode_bench,A e2e_decode_bench,"
want+="B nsa_decode_bench,B nsa_decode_bench,B nsa_decode_bench,B nsa_decode_bench,B e2e_decode_bench,"
[ "$order" = "$want$want" ] || fail "the builds did not alternate round by round: $order"
grep -q "A nsa_decode_bench --quick only= trace= x= y=$" "$calls" || fail "no quick decode table run"
grep -q "A nsa_decode_bench  only=7b:1:65536 trace=1 x= y=$" "$calls" || fail "no trace run with NSA_BENCH_TRACE=1"
grep -q "B nsa_decode_bench --prefill only=paper:1:65536 trace= x= y=$" "$calls" || fail "no paper prefill run"
for f in dbench-a-1.md dbench-b-2.md trace-a-7b-1-65536-1.txt prefill-b-7b-2.md e2e-a-2.md; do
  [ -s "$tmp/out1/$f" ] || fail "no $f"
done
grep -q "== dbench-b-1.md  7b | 1 | 64k | 1B" "$tmp/summary1" || fail "the summary lacks b's decode row"
grep -q "== e2e-a-1.md  1 x 512 | 2A" "$tmp/summary1" || fail "the summary lacks a's e2e row"
grep -q "trace combine 64 tasks: last end 1A us" "$tmp/summary1" || fail "the summary lacks a's trace"

# NAME:DIR:VAR=VALUE,...: the same binaries, each run with those variables (beside the bench's own).
: > "$calls"
bash "$src" "$tmp/out4" --rounds 1 --trace 7b:1:65536 plain:"$tmp/A" env:"$tmp/A":NSA_X=0,NSA_Y=a.b > "$tmp/summary4" ||
  fail "a run with an environment variant exited nonzero"
[ "$(grep -c " x=0 y=a.b$" "$calls")" = 3 ] || fail "the variant's runs did not all see NSA_X=0 NSA_Y=a.b: $(cat "$calls")"
[ "$(grep -c " x= y=$" "$calls")" = 3 ] || fail "the plain build's runs saw the variant's variables"
grep -q "A nsa_decode_bench  only=7b:1:65536 trace=1 x=0 y=a.b$" "$calls" || fail "the variant's trace lost NSA_BENCH_TRACE"
grep -q "== dbench-env-1.md  7b | 1 | 64k | 1A" "$tmp/summary4" || fail "the summary lacks the variant's row"

# A failing bench fails the run (after every build ran).
stand_in "$tmp/B" e2e_decode_bench 2B 1
: > "$calls"
if bash "$src" "$tmp/out2" --rounds 1 a:"$tmp/A" b:"$tmp/B" > /dev/null; then fail "a failing bench did not fail the run"; fi
[ "$(wc -l < "$calls")" = 4 ] || fail "the run stopped early at the failing bench"

# Bad arguments are refused before anything runs.
: > "$calls"
for args in "--rounds 0 a:$tmp/A" "--trace 7b:one:64k a:$tmp/A" "--prefil a:$tmp/A" "a$tmp/A" "" "a:$tmp/missing" \
            "a:$tmp/A:lower=1" "a:$tmp/A:NSA_X"; do
  # shellcheck disable=SC2086
  if bash "$src" "$tmp/out3" $args > /dev/null 2>&1; then fail "accepted: $args"; fi
done
[ ! -s "$calls" ] || fail "a refused run still ran a bench"
echo "PASS: compare.sh"
