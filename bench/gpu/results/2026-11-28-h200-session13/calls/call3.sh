#!/usr/bin/env bash
# Thirteenth session, call 3: main 202e1d7 against wip/lean-copies 168467e (the lean copies, cp.async
# without the memory clobber) and wip/lean-dec 00187e5 (the same for the decode kernel, the prefill
# kernels on the previous copy loops), alternating: prefill 7b and paper at 64k, decode quick
# tables, e2e --quick. Then every kernel's SASS of the staged binaries searched for VIMNMX with a
# predicate output (the ptxas fault of minmax_probe), and the selected prefill kernel's SASS of both.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
m=$here/stage/main; l=$here/stage/wip-lean-copies; d=$here/stage/bin; cb=/usr/local/cuda/bin
mkdir -p $out; for x in $m $l $here/stage; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
t0=$(date +%s); el() { echo "$1 rc=$2 $(( $(date +%s)-t0 ))s"; }
for i in 1 2; do
  for v in main:$m lean:$l dec:$d; do
    for s in 7b:1:65536 paper:1:65536; do
      NSA_BENCH_ONLY=$s timeout 60 ${v#*:}/nsa_decode_bench --prefill > $out/prefill-${v%%:*}-${s%%:*}-$i.md 2>&1
    done
    timeout 30 ${v#*:}/nsa_decode_bench --quick > $out/dbench-${v%%:*}-$i.md 2>&1
    timeout 40 ${v#*:}/e2e_decode_bench --quick > $out/e2e-${v%%:*}-$i.md 2>&1
  done
done; el bench 0
mkdir -p $out/sass; cd $out/sass
for v in lean:$l dec:$d; do
  mkdir ${v%%:*} && (cd ${v%%:*} && $cb/cuobjdump -xelf all ${v#*:}/nsa_decode_bench > /dev/null 2>&1
    for f in *.cubin; do $cb/nvdisasm -c $f > ${f%.cubin}.sass 2>&1; done; rm -f *.cubin; gzip *.sass)
done
mkdir all && (cd all && $cb/cuobjdump -xelf all $d/model_gpu_test > /dev/null 2>&1; ls > list.txt
  for f in *.cubin; do echo "$f $($cb/nvdisasm -c $f | grep -cE 'VIMNMX[^,;]*, P[0-6T], P')"; done > vimnmx-pred.txt; rm -f *.cubin)
cd $here; el sass 0; cat $out/sass/all/vimnmx-pred.txt
for f in $out/prefill-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | head -1 | cut -d'|' -f2-6)"; done
for f in $out/dbench-*.md; do echo "== $(basename $f) $(grep -E "^\| (7b|paper) " $f | cut -d'|' -f2-5 | tr '\n' ';')"; done
for f in $out/e2e-*-?.md; do echo "$(basename $f) $(grep -E '^\| (1 x 512|1 x 1024|1 x 65536|8 x 65536|32 x 65536) ' $f | cut -d'|' -f2-3 | tr '\n' ' ')"; done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
