#!/usr/bin/env bash
# Compares staged builds on the GPU machine, alternating them round by round so that the clocks'
# and the memory's drift falls on every build alike: the quick decode table, batch traces of the
# fused kernel, e2e --quick and (with --prefill) the prefill bench at 7b and paper 64k. Writes one
# file a run into OUT and prints a summary a file. Each BUILD is NAME:DIR, DIR holding
# nsa_decode_bench and e2e_decode_bench (stage/bin, or a folder of bench/gpu/stage-branches.sh),
# or NAME:DIR:VAR=VALUE[,VAR=VALUE...]: the same binaries with those environment variables (the
# kernels' switches, e.g. NSA_DECODE_SEL_WAVE=0: one staged build, several variants).
#   bench/gpu/compare.sh OUT [--rounds N] [--prefill] [--trace SHAPE:BATCH:CONTEXT]... BUILD...
# (The sessions' call scripts repeated these loops by hand; LD_LIBRARY_PATH as run-all.sh's.)
set -uo pipefail
out=${1:?usage: compare.sh OUT [--rounds N] [--prefill] [--trace SHAPE:BATCH:CONTEXT]... NAME:DIR...}
shift
rounds=2 prefill=0 traces=() builds=()
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=${2:?--rounds needs a count}; shift ;;
    --prefill) prefill=1 ;;
    --trace) traces+=("${2:?--trace needs SHAPE:BATCH:CONTEXT}"); shift ;;
    -*) echo "compare.sh: unknown option '$1'" >&2; exit 2 ;;
    *:*) builds+=("$1") ;;
    *) echo "compare.sh: a build is NAME:DIR, not '$1'" >&2; exit 2 ;;
  esac
  shift
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --rounds wants a positive count, not '$rounds'" >&2; exit 2; }
[ ${#builds[@]} -ge 1 ] || { echo "compare.sh: no build to run" >&2; exit 2; }
for t in "${traces[@]}"; do
  [[ $t =~ ^[a-z0-9.-]+:[0-9]+:[0-9]+$ ]] || { echo "compare.sh: a trace is SHAPE:BATCH:CONTEXT, not '$t'" >&2; exit 2; }
done
dir_of() { local rest=${1#*:}; echo "${rest%%:*}"; }
env_of() {  # the build's VAR=VALUE list, space-separated (empty for NAME:DIR)
  local rest=${1#*:}
  [[ $rest == *:* ]] && echo "${rest#*:}" | tr ',' ' '
  return 0
}
for bld in "${builds[@]}"; do
  dir=$(dir_of "$bld")
  for e in $(env_of "$bld"); do
    [[ $e =~ ^[A-Z_][A-Z0-9_]*=[^[:space:]]*$ ]] || { echo "compare.sh: '$e' in '$bld' is not VAR=VALUE" >&2; exit 2; }
  done
  for b in nsa_decode_bench e2e_decode_bench; do
    [ -x "$dir/$b" ] || { echo "compare.sh: $dir/$b is missing" >&2; exit 2; }
  done
done
mkdir -p "$out"
status=0
for ((i = 1; i <= rounds; ++i)); do
  for bld in "${builds[@]}"; do
    name=${bld%%:*} dir=$(dir_of "$bld")
    read -ra envs <<< "$(env_of "$bld")"
    timeout 60 env "${envs[@]}" "$dir/nsa_decode_bench" --quick > "$out/dbench-$name-$i.md" 2>&1 || status=1
    for t in "${traces[@]}"; do
      NSA_BENCH_TRACE=1 NSA_BENCH_ONLY=$t timeout 30 env "${envs[@]}" "$dir/nsa_decode_bench" > "$out/trace-$name-${t//:/-}-$i.txt" 2>&1 || status=1
    done
    if [ $prefill = 1 ]; then
      for s in 7b paper; do
        NSA_BENCH_ONLY=$s:1:65536 timeout 90 env "${envs[@]}" "$dir/nsa_decode_bench" --prefill > "$out/prefill-$name-$s-$i.md" 2>&1 || status=1
      done
    fi
    timeout 60 env "${envs[@]}" "$dir/e2e_decode_bench" --quick > "$out/e2e-$name-$i.md" 2>&1 || status=1
  done
done
# The summary: a line a file, the rows the sessions compared.
for f in "$out"/dbench-*.md; do
  echo "== $(basename "$f") $(grep -E '^\| (7b|paper) ' "$f" | cut -d'|' -f2-5 | tr '\n' ';')"
done
for f in "$out"/prefill-*.md; do
  [ -e "$f" ] && echo "== $(basename "$f") $(grep -E '^\| (7b|paper) ' "$f" | head -1 | cut -d'|' -f2-6)"
done
for f in "$out"/e2e-*.md; do
  echo "== $(basename "$f") $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' "$f" | cut -d'|' -f2-3 | tr '\n' ' ')"
done
for f in "$out"/trace-*.txt; do
  [ -e "$f" ] || continue
  echo "== $(basename "$f") $(grep -E '^\| (7b|paper) ' "$f" | cut -d'|' -f2-5)"
  grep -E 'trace (compressed|score|selected|combine)' "$f" | cut -c1-110
done
exit $status
