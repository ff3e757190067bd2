#!/usr/bin/env bash
# Fourteenth session, call 8: the review commit (nsa_decode_test's bf16 checks through one helper;
# nsa_decode.cu's cubin byte-identical to 7c450cd's): nsa_decode_test alone.
set -uo pipefail
out=$1; here=$(pwd)
export LD_LIBRARY_PATH=$here/stage/lib:/usr/local/cuda/lib64
mkdir -p $out; cat stage/COMMIT > $out/commit.txt
timeout 150 stage/bin/nsa_decode_test > $out/nsa_decode_test.log 2>&1; echo "decode rc=$?"
grep -E "^\[  (PASSED|FAILED)  \]|FAILED  \]" $out/nsa_decode_test.log
cd $(dirname $out) && tar czf $out.tgz $(basename $out) && rm -rf $out
