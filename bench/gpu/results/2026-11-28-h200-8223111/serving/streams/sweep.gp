# Columns of sweep-API.tsv: 1 x (req/s), then sweep.tsv's: 9 output tok/s, 10 total tok/s,
# 12-15 TTFT mean/p50/p90/p99, 16-19 TPOT, 20-23 ITL, 24-27 E2EL (ms).
files = "/root/out/serving/streams/sweep-grpc.tsv /root/out/serving/streams/sweep-openai.tsv"
apis = "grpc openai"
set terminal pngcairo size 1400,1000 font ",10"
set output "/root/out/serving/streams/sweep.png"
set multiplot layout 2,2 title "nsa-bench-serving: latency and throughput against request rate"
set grid
set xrange [0 : 1 * 1.1]
set xtics add ("inf" 1)
set key top left
set xlabel "request rate (req/s)"
set ylabel "ms"
set title "TTFT"
plot for [i=1:words(files)] word(files,i) u 1:13 w lp lc i dt 1 pt 7 t word(apis,i)." p50",      for [i=1:words(files)] word(files,i) u 1:14 w lp lc i dt 2 pt 7 t word(apis,i)." p90",      for [i=1:words(files)] word(files,i) u 1:15 w lp lc i dt 3 pt 7 t word(apis,i)." p99"
set title "TPOT"
plot for [i=1:words(files)] word(files,i) u 1:17 w lp lc i dt 1 pt 7 t word(apis,i)." p50",      for [i=1:words(files)] word(files,i) u 1:18 w lp lc i dt 2 pt 7 t word(apis,i)." p90",      for [i=1:words(files)] word(files,i) u 1:19 w lp lc i dt 3 pt 7 t word(apis,i)." p99"
set title "E2EL"
plot for [i=1:words(files)] word(files,i) u 1:25 w lp lc i dt 1 pt 7 t word(apis,i)." p50",      for [i=1:words(files)] word(files,i) u 1:26 w lp lc i dt 2 pt 7 t word(apis,i)." p90",      for [i=1:words(files)] word(files,i) u 1:27 w lp lc i dt 3 pt 7 t word(apis,i)." p99"
set title "Token throughput"
set ylabel "tokens/s"
plot for [i=1:words(files)] word(files,i) u 1:9 w lp lc i dt 1 pt 7 t word(apis,i)." output",      for [i=1:words(files)] word(files,i) u 1:10 w lp lc i dt 2 pt 7 t word(apis,i)." total"
unset multiplot
