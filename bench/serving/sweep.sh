#!/usr/bin/env bash
# Latency and throughput against request rate, through the gRPC and the OpenAI HTTP API of a
# running server: one nsa-bench-serving run per (rate, API), each run's JSON kept, one row per
# run in a data table, and a PNG drawn by gnuplot (TTFT, TPOT and E2EL p50/p90/p99 and token
# throughput against the request rate).
#
#   bench/serving/sweep.sh --grpc HOST:PORT --http HOST:PORT [--metrics URL] [--rates "1 2 4 8"]
#       [--out DIR] [--bench BIN] [-- GENERATOR FLAGS...]
#   bench/serving/sweep.sh --plot-only DIR      (draws DIR/sweep.png again from DIR/sweep.tsv)
#
# Either API may be left out. Flags after "--" go to every run (e.g. --num-prompts 200
# --input-len 1024 --output-len 128 --num-warmups 4), except --seed S: run k (in the order the
# runs go: each rate, gRPC then HTTP) gets --seed S + k (S = 0 by default), so no run sends
# another run's prompts (the server's prefix cache would serve the repeat, and the later API
# would look faster than it is), and every run --arrival-seed A (S + 1 unless given): the same
# arrival schedule for both APIs. Rate "inf" sends everything at once; it is
# plotted one step past the largest finite rate. Writes DIR/{grpc,openai}-rate-R.json (and the
# printed tables as .txt), DIR/sweep.tsv, DIR/sweep.gp and DIR/sweep.png. Without gnuplot (a GPU
# machine) the runs still happen; copy DIR back and use --plot-only.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bench="$here/../../build/bench/serving/nsa-bench-serving"
grpc="" http="" metrics="" rates="1 2 4 8" out="sweep-out" plot_only=0
while (($#)); do
  case "$1" in
    --plot-only) plot_only=1; out="$2"; shift 2 ;;
    --grpc) grpc="$2"; shift 2 ;;
    --http) http="$2"; shift 2 ;;
    --metrics) metrics="$2"; shift 2 ;;
    --rates) rates="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --bench) bench="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "sweep.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
table="$out/sweep.tsv"
apis=()
if ((plot_only)); then
  [[ -s "$table" ]] || { echo "sweep.sh: no $table to plot" >&2; exit 2; }
  for api in grpc openai; do
    if awk -v api="$api" '!/^#/ && $1 == api {f = 1} END {exit !f}' "$table"; then apis+=("$api"); fi
  done
  rates=""
else
  [[ -n "$grpc$http" ]] || { echo "sweep.sh: give --grpc HOST:PORT and/or --http HOST:PORT" >&2; exit 2; }
  [[ -x "$bench" ]] || { echo "sweep.sh: no generator at $bench (build nsa-bench-serving or pass --bench)" >&2; exit 2; }
  mkdir -p "$out"
  rm -f "$table"
  [[ -n "$grpc" ]] && apis+=(grpc)
  [[ -n "$http" ]] && apis+=(openai)
fi
# The generator flags without --seed and --arrival-seed (either spelling): the first run's seed
# and every run's arrival seed.
seed=0 arrival="" flags=() dataset=0
while (($#)); do
  case "$1" in
    --seed|-seed|--arrival-seed|-arrival-seed)
      [[ $# -ge 2 ]] || { echo "sweep.sh: $1 needs a value" >&2; exit 2; }
      if [[ $1 == *arrival* ]]; then arrival=$2; else seed=$2; fi
      shift 2 ;;
    --seed=*|-seed=*) seed=${1#*=}; shift ;;
    --arrival-seed=*|-arrival-seed=*) arrival=${1#*=}; shift ;;
    --dataset|-dataset|--dataset=*|-dataset=*) dataset=1; flags+=("$1"); shift ;;
    *) flags+=("$1"); shift ;;
  esac
done
for v in "$seed" "${arrival:-0}"; do
  [[ $v =~ ^[0-9]{1,18}$ ]] || { echo "sweep.sh: seeds must be non-negative integers (at most 18 digits), got '$v'" >&2; exit 2; }
done
seed=$((10#$seed))  # not octal for a leading zero
arrival=$((10#${arrival:-$((seed + 1))}))
if ((dataset)) && ((${#apis[@]} > 1)); then
  echo "sweep.sh: with --dataset every run sends the file's prompts: the later API's runs can find them in the prefix cache" >&2
fi
run_index=0
for rate in $rates; do
  for api in "${apis[@]}"; do
    if [[ $api == grpc ]]; then addr=$grpc; else addr=$http; fi
    extra=()
    [[ -n "$metrics" ]] && extra+=(--metrics-url "$metrics")
    echo "sweep.sh: $api at rate $rate" >&2
    "$bench" --backend "$api" --host "${addr%:*}" --port "${addr##*:}" --request-rate "$rate" --label "$api" \
      --result-json "$out/$api-rate-$rate.json" --append-table "$table" "${extra[@]}" ${flags[@]+"${flags[@]}"} \
      --seed $((seed + run_index)) --arrival-seed "$arrival" > "$out/$api-rate-$rate.txt"
    run_index=$((run_index + 1))
  done
done

# One data file per API for gnuplot: the plotted x first, then the table's row. Rate inf is
# plotted one step past the largest finite rate, labelled "inf".
max_rate=$(awk '!/^#/ && $2 != "inf" && $2 > m {m = $2} END {print m + 0}' "$table")
min_rate=$(awk '!/^#/ && $2 != "inf" && (m == "" || $2 < m) {m = $2} END {print m + 0}' "$table")
inf_x=$(awk -v m="$max_rate" 'BEGIN {print (m > 0 ? 2 * m : 1)}')
log_x=$(awk -v lo="$min_rate" -v hi="$max_rate" 'BEGIN {print (lo > 0 && hi / lo >= 8) ? 1 : 0}')
files=""
for api in "${apis[@]}"; do
  awk -v api="$api" -v inf_x="$inf_x" 'BEGIN {print "# x", "(then sweep.tsv)"}
    !/^#/ && $1 == api {print ($2 == "inf" ? inf_x : $2), $0}' "$table" | sort -g -k1,1 > "$out/sweep-$api.tsv"
  files="$files $out/sweep-$api.tsv"
done
has_inf=$(awk '!/^#/ && $2 == "inf" {f = 1} END {print f + 0}' "$table")
log_line="" inf_line=""
top=$(awk -v m="$max_rate" -v i="$inf_x" -v f="$has_inf" 'BEGIN {print (f ? i : m)}')
if ((log_x)); then
  log_line="set logscale x 2; set xrange [$min_rate / 1.25 : $top * 1.25]"
else
  log_line="set xrange [0 : $top * 1.1]"
fi
if ((has_inf)); then inf_line="set xtics add (\"inf\" $inf_x)"; fi

cat > "$out/sweep.gp" <<EOF
# Columns of sweep-API.tsv: 1 x (req/s), then sweep.tsv's: 9 output tok/s, 10 total tok/s,
# 12-15 TTFT mean/p50/p90/p99, 16-19 TPOT, 20-23 ITL, 24-27 E2EL (ms).
files = "${files# }"
apis = "${apis[*]}"
set terminal pngcairo size 1400,1000 font ",10"
set output "$out/sweep.png"
set multiplot layout 2,2 title "nsa-bench-serving: latency and throughput against request rate"
set grid
$log_line
$inf_line
set key top left
set xlabel "request rate (req/s)"
set ylabel "ms"
set title "TTFT"
plot for [i=1:words(files)] word(files,i) u 1:13 w lp lc i dt 1 pt 7 t word(apis,i)." p50", \
     for [i=1:words(files)] word(files,i) u 1:14 w lp lc i dt 2 pt 7 t word(apis,i)." p90", \
     for [i=1:words(files)] word(files,i) u 1:15 w lp lc i dt 3 pt 7 t word(apis,i)." p99"
set title "TPOT"
plot for [i=1:words(files)] word(files,i) u 1:17 w lp lc i dt 1 pt 7 t word(apis,i)." p50", \
     for [i=1:words(files)] word(files,i) u 1:18 w lp lc i dt 2 pt 7 t word(apis,i)." p90", \
     for [i=1:words(files)] word(files,i) u 1:19 w lp lc i dt 3 pt 7 t word(apis,i)." p99"
set title "E2EL"
plot for [i=1:words(files)] word(files,i) u 1:25 w lp lc i dt 1 pt 7 t word(apis,i)." p50", \
     for [i=1:words(files)] word(files,i) u 1:26 w lp lc i dt 2 pt 7 t word(apis,i)." p90", \
     for [i=1:words(files)] word(files,i) u 1:27 w lp lc i dt 3 pt 7 t word(apis,i)." p99"
set title "Token throughput"
set ylabel "tokens/s"
plot for [i=1:words(files)] word(files,i) u 1:9 w lp lc i dt 1 pt 7 t word(apis,i)." output", \
     for [i=1:words(files)] word(files,i) u 1:10 w lp lc i dt 2 pt 7 t word(apis,i)." total"
unset multiplot
EOF
if ! command -v gnuplot >/dev/null; then
  echo "sweep.sh: $table written; gnuplot is missing (Debian: gnuplot-nox): copy $out to a machine with it and" \
    "run sweep.sh --plot-only $out" >&2
  exit 0
fi
gnuplot "$out/sweep.gp"
echo "sweep.sh: $table, $out/sweep.png" >&2
