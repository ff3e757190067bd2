#!/usr/bin/env bash
# Twelfth session, call 3: diagnostics of wip/prefill-warp-split's failing split walk on its three
# smallest failing cases: D1 (its block barriers back and main's block-wide copies), D3 (its
# block barriers back and main's mask), and the branch itself.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
mkdir -p $out; for x in $here/stage/wip-*; do echo "$x $(cat $x/COMMIT)"; done > $out/commits.txt
f='*SplitWalkMatchesTheCpuTwin/fla_7b_start:*SplitWalkMatchesTheCpuTwin/G64:*SplitWalkMatchesTheCpuTwin/G32'
for v in pws-d1 pws-d3 prefill-warp-split; do
  timeout 60 $here/stage/wip-$v/nsa_prefill_test --gtest_filter="$f" > $out/$v.log 2>&1; echo "$v rc=$?"
  grep -E "^\[  (PASSED|FAILED)  \]|^\[       OK|^\[  FAILED  \] Shapes" $out/$v.log | cut -c1-100
  grep -m4 -A3 "Failure" $out/$v.log | cut -c1-160
done
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
