#!/usr/bin/env bash
# Stages the GPU binaries, the small test models and the shared libraries they need into stage/
# (git-ignored) for the GPU machine: build here (deploy/build.sh), then run there with
# bench/gpu/run-all.sh. cuBLASLt (540 MB) is not bundled: the GPU machine has it (run-all.sh
# finds it).
set -euo pipefail
cd "$(dirname "$0")/../.."
# Build first: staging a build/ older than the tree would run other code than COMMIT names.
ninja -C build > /dev/null
rm -rf stage && mkdir -p stage/bin stage/models
bins=(build/tests/nsa_decode_test build/tests/nsa_prefill_test build/tests/kv_write_test build/tests/pdl_test build/tests/model_gpu_test build/bench/nsa_decode_bench
      build/bench/e2e_decode_bench build/tests/nsa-logits build/server/nsa-server build/models/nsa-model)
bins+=(build/tests/sampling_gpu_test build/tests/engine_gpu_test build/tests/model_ops_gpu_test build/bench/serving/nsa-bench-serving)
bins+=(build/bench/icache_probe build/bench/minmax_probe)
cp "${bins[@]}" stage/bin/
strip stage/bin/* 2>/dev/null || true
cp -r build/tests/models/tiny stage/models/
../shared/tools/bundle-libs stage/lib stage/bin/* build/lib/libnsa_sentencepiece.so
cp build/lib/libnsa_sentencepiece.so stage/lib/ 2>/dev/null || true
rm -f stage/lib/libcublas* stage/lib/libcuda.so*
# The commit the binaries were built from (the GPU machine's copy of the tree has no .git).
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!stage' || echo -dirty)" > stage/COMMIT
du -sh stage
