// End-to-end decode steps of the CUDA runner (engine/runner/cuda_runner.h) on a preset's random
// weights generated on the GPU, against the floor of targets.md:
//   floor = (weight bytes a step reads + NSA cache bytes read for every layer, sequence and KV
//            head, nsa-spec.md section 5) / copy ceiling measured in the same run.
// The cache is filled with random values instead of a prefill (a decode step's time does not
// depend on what the pages hold), so 32 x 64k contexts cost no prefill time. A step is timed
// the way the engine sees it: Execute() from metadata upload to logits on the host, CUDA graph
// replay included; median of the timed steps after warm-up (the first step of a shape captures
// its graph).
//
// Then the time to first token of 1.3b prompts of 8k-128k tokens (issue 8's baseline).
//
//   e2e_decode_bench [--quick]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "bench/gpu/copy_ceiling.h"
#include "engine/runner/cuda_runner.h"
#include "engine/runner/direct_batch.h"
#include "kernels/cuda/model_ops.h"
#include "kernels/kv_layout.h"
#include "models/presets.h"

namespace nsa {
namespace {

struct Case {
  int batch;  // 0: as many 64k sequences as the cache holds
  int64_t context;
};

double CacheBytesPerSeq(const ModelConfig& c, int64_t T) {
  const NsaParams& p = c.nsa;
  const double entries = p.NumCompressed(T) + std::min<int64_t>(int64_t{p.num_selected} * p.select_block, T) + std::min<int64_t>(p.window, T);
  return entries * (c.head_dim + c.v_head_dim) * 2.0 * c.num_kv_heads * c.num_layers;
}

int Run(const char* preset, const std::vector<Case>& cases, double ceiling, int steps, bool graphs = true) {
  ModelConfig config = *PresetConfig(preset);
  int64_t max_context = 0;
  int max_batch = 1;
  for (const Case& c : cases) max_context = std::max(max_context, c.context), max_batch = std::max(max_batch, c.batch);
  CudaRunnerOptions o;
  o.max_num_seqs = std::max(max_batch, 64);
  o.max_step_tokens = o.max_num_seqs;
  o.max_context = max_context + 256;
  o.progress = false;
  o.cuda_graphs = graphs;
  o.profile = !graphs;
  // NSA_SMALL_GEMM_ROWS=r: the small-m GEMM up to r rows (the runner's default otherwise).
  if (const char* rows = std::getenv("NSA_SMALL_GEMM_ROWS")) o.small_gemm_rows = std::atoi(rows);
  auto runner_or = CudaRunner::Create(config, nullptr, 1, o);
  if (!runner_or.ok()) {
    std::fprintf(stderr, "%s: %s\n", preset, runner_or.status().ToString().c_str());
    return 1;
  }
  CudaRunner& r = **runner_or;
  const KvLayout L = KvLayout::Make(config.num_layers, config.num_kv_heads, config.head_dim, config.v_head_dim, config.nsa);
  // Random cache contents (the scratch page too).
  if (cuda::LaunchRandomBf16(static_cast<__nv_bfloat16*>(r.page_storage()), (int64_t{r.num_pages()} + 1) * L.page_elems, 3, 4,
                             0.0f, 1.0f, nullptr) != cudaSuccess ||
      cudaDeviceSynchronize() != cudaSuccess) {
    std::fprintf(stderr, "cannot fill the cache\n");
    return 1;
  }
  // Weights a decode step reads: all but the embedding table (B rows of it).
  const double weight_read = r.weight_bytes() - double(config.vocab_size) * config.hidden_size * 2;
  std::printf("### %s: %s\n\n", preset, r.Describe().c_str());
  std::printf("| batch x context | step (ms) | tokens/s | weight bytes (GB) | cache bytes (GB) | floor (ms) | step / floor |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  std::mt19937 rng(5);
  for (Case c : cases) {
    // Steps advance one position each from `context` (a real decode): one step in d completes
    // a compressed block, as in serving; the median is an ordinary step.
    const int64_t per_seq = (c.context + steps + 3) / L.page_tokens + 1;
    const int kinds = 1 + L.has_win + (L.has_src_k || L.has_src_v);
    if (c.batch == 0) c.batch = static_cast<int>(std::min<int64_t>(o.max_num_seqs, r.num_pages() / (per_seq * kinds)));
    if (c.batch < 1 || int64_t{c.batch} * per_seq * kinds > r.num_pages()) {
      std::printf("| %d x %lld | does not fit (%d pages) | | | | | |\n", c.batch, (long long)c.context, r.num_pages());
      continue;
    }
    std::vector<PageTables> tables(c.batch);
    int32_t next = 0;
    for (PageTables& t : tables) {
      for (int64_t j = 0; j < per_seq; ++j) {
        t.raw.push_back(next++);
        if (L.has_win) t.win.push_back(next++);
        if (L.has_src_k || L.has_src_v) t.src.push_back(next++);
      }
    }
    std::vector<int> tokens(c.batch);
    std::vector<double> ms;
    for (int s = 0; s < steps + 3; ++s) {
      for (int& x : tokens) x = static_cast<int>(rng() % config.vocab_size);
      std::vector<RunnerSeq> seqs;
      for (int i = 0; i < c.batch; ++i) seqs.push_back(RunnerSeq{i, &tables[i], c.context - 1 + s, {&tokens[i], 1}, {}, true});
      const auto t0 = std::chrono::steady_clock::now();
      auto out = r.Execute(seqs);
      const auto t1 = std::chrono::steady_clock::now();
      if (!out.ok()) {
        std::fprintf(stderr, "%s: %s\n", preset, out.status().ToString().c_str());
        return 1;
      }
      if (s >= 3) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    const double step = ms[ms.size() / 2];
    const double cache = CacheBytesPerSeq(config, c.context) * c.batch;
    const double floor_ms = (weight_read + cache) / ceiling * 1e3;
    std::printf("| %d x %lld | %.3f | %.0f | %.2f | %.2f | %.3f | %.2f |\n", c.batch, (long long)c.context, step,
                c.batch / step * 1e3, weight_read / 1e9, cache / 1e9, floor_ms, step / floor_ms);
    if (!graphs) std::printf("\nstage times (eager, CUDA events): %s\n", r.ProfileReport().c_str());
    std::fflush(stdout);
  }
  std::printf("\n");
  return 0;
}

// Time to first token of one prompt of each length: random tokens prefilled in chunks of
// `chunk` through Execute() (the engine's chunked prefill without the scheduler), from the first
// chunk's upload to the last chunk's logits on the host.
int RunPrefill(const char* preset, const std::vector<int64_t>& prompts, int chunk) {
  ModelConfig config = *PresetConfig(preset);
  const int64_t longest = *std::max_element(prompts.begin(), prompts.end());
  CudaRunnerOptions o;
  o.max_num_seqs = 8;
  o.max_step_tokens = chunk;
  o.max_context = longest + 256;
  o.progress = false;
  auto runner_or = CudaRunner::Create(config, nullptr, 1, o);
  if (!runner_or.ok()) {
    std::fprintf(stderr, "%s: %s\n", preset, runner_or.status().ToString().c_str());
    return 1;
  }
  CudaRunner& r = **runner_or;
  std::printf("### %s, time to first token (chunks of %d tokens): %s\n\n", preset, chunk, r.Describe().c_str());
  std::printf("| prompt | time to first token (ms) | prompt tokens/s |\n|---|---|---|\n");
  std::mt19937 rng(6);
  for (int64_t T : prompts) {
    DirectBatch batch(r, 7);
    const int seq = batch.AddSequence();
    std::vector<int> tokens(T);
    for (int& x : tokens) x = static_cast<int>(rng() % config.vocab_size);
    const auto t0 = std::chrono::steady_clock::now();
    auto out = batch.Prefill(seq, tokens, chunk);
    if (!out.ok()) {
      std::fprintf(stderr, "%s, prompt %lld: %s\n", preset, static_cast<long long>(T), out.status().ToString().c_str());
      return 1;
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("| %lldk | %.1f | %.0f |\n", static_cast<long long>(T / 1024), ms, T / ms * 1e3);
    std::fflush(stdout);
  }
  std::printf("\n");
  return 0;
}

}  // namespace
}  // namespace nsa

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  // --profile: a few eager steps of one small case, for nsys / ncu to break down.
  if (argc > 1 && std::strcmp(argv[1], "--profile") == 0) {
    return nsa::Run("1.3b", {{1, 512}, {1, 1024}, {32, 65536}}, 3e12, 3, false);
  }
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  const double ceiling = nsa::bench::CopyCeiling();
  std::printf("device: %s; copy ceiling %.2f TB/s\n\n", prop.name, ceiling / 1e12);
  const int steps = quick ? 10 : 30;
  int rc = nsa::Run("1.3b", {{1, 512}, {1, 1024}, {1, 65536}, {8, 65536}, {32, 65536}}, ceiling, steps);
  if (!quick) rc |= nsa::Run("7b", {{1, 1024}, {0, 65536}}, ceiling, steps);
  rc |= nsa::RunPrefill("1.3b", quick ? std::vector<int64_t>{8192, 65536} : std::vector<int64_t>{8192, 16384, 32768, 65536, 131072},
                        2048);
  return rc;
}
