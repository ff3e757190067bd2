// The engine on the CUDA runner with the tiny model directory (tokenizer included), sampling on
// the device: seeded outputs equal alone and in a batch, n > 1 with logprobs, and greedy
// requests (with penalties and logit bias, which reach the device sampler as extras) equal to the
// same runner sampling on the host.
//   NSA_TEST_MODEL_DIR (default: the build tree's tests/models/tiny) names the model directory.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <map>

#include "engine/engine.h"
#include "engine/runner/cuda_runner.h"
#include "models/progress.h"
#include "models/tokenizer.h"

namespace nsa {
namespace {

std::string ModelDir() {
  const char* env = std::getenv("NSA_TEST_MODEL_DIR");
  return env ? env : std::string(NSA_TEST_MODELS) + "/tiny";
}

std::unique_ptr<Engine> MakeEngine(bool device_sampling, int small_gemm_rows = 1) {
  Progress::SetEnabled(false);
  CudaRunnerOptions o;
  o.small_gemm_rows = small_gemm_rows;
  o.num_pages = 4096;
  o.max_num_seqs = 64;
  o.max_step_tokens = 512;
  o.device_sampling = device_sampling;
  o.progress = false;
  auto runner = CudaRunner::Load(ModelDir(), o);
  EXPECT_TRUE(runner.ok()) << runner.status();
  if (!runner.ok()) return nullptr;
  std::string error;
  auto tokenizer = Tokenizer::Load(ModelDir() + "/tokenizer.model", &error);
  EXPECT_NE(tokenizer, nullptr) << error;
  EngineOptions options;
  options.seed = 99;
  options.scheduler.max_num_seqs = 64;
  options.scheduler.max_num_batched_tokens = 512;
  auto engine = Engine::Create(options, std::move(*runner), std::move(tokenizer));
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? std::move(*engine) : nullptr;
}

struct Out {
  std::vector<int> tokens;
  std::vector<TokenLogprobs> logprobs;
  bool finished = false;
};

std::map<int, Out> Collect(RequestHandle& h) {
  std::map<int, Out> out;
  while (auto e = h.Next()) {
    if (auto* d = std::get_if<Delta>(&*e)) {
      Out& o = out[d->index];
      o.tokens.insert(o.tokens.end(), d->token_ids.begin(), d->token_ids.end());
      o.logprobs.insert(o.logprobs.end(), d->logprobs.begin(), d->logprobs.end());
    } else {
      const Final& f = std::get<Final>(*e);
      EXPECT_NE(f.reason, FinishReason::kError) << f.error;
      out[f.index].finished = true;
    }
  }
  return out;
}

Request Make(const std::string& text, int max_tokens, float temperature, uint64_t seed) {
  Request r;
  r.text = text;
  r.stop.max_tokens = max_tokens;
  r.stop.ignore_eos = true;
  r.sampling.temperature = temperature;
  r.sampling.top_p = 0.9f;
  r.has_seed = true;
  r.sampling.seed = seed;
  return r;
}

// Every step on cuBLASLt: a sequence alone and in the batch of 20 then runs the same kernels
// (with the small-m kernel, alone it would not; see CudaRunnerOptions::small_gemm_rows), so
// this checks that each request's seeded generator is its own, whatever else runs beside it.
TEST(EngineGpuTest, SeededOutputIsTheSameAloneAndInABatch) {
  auto e = MakeEngine(true, 0);
  ASSERT_NE(e, nullptr);
  const std::vector<std::string> prompts = {"Permission is hereby granted", "THE SOFTWARE IS PROVIDED", "without warranty",
                                            "GNU General Public License", "Redistribution and use"};
  std::vector<std::vector<int>> alone;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto h = e->Submit(Make(prompts[i], 32, 0.8f, 100 + i));
    ASSERT_TRUE(h.ok()) << h.status();
    alone.push_back(Collect(**h)[0].tokens);
    EXPECT_EQ(alone.back().size(), 32u);
  }
  std::vector<std::unique_ptr<RequestHandle>> handles;
  for (int round = 0; round < 4; ++round) {
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto h = e->Submit(Make(prompts[i], 32, 0.8f, 100 + i));
      ASSERT_TRUE(h.ok()) << h.status();
      handles.push_back(std::move(*h));
    }
  }
  for (size_t k = 0; k < handles.size(); ++k) {
    EXPECT_EQ(Collect(*handles[k])[0].tokens, alone[k % prompts.size()]) << "request " << k;
  }
}

TEST(EngineGpuTest, NCompletionsWithLogprobs) {
  auto e = MakeEngine(true);
  ASSERT_NE(e, nullptr);
  Request r = Make("Permission is hereby granted", 20, 1.0f, 5);
  r.n = 3;
  r.logprobs = 4;
  auto h = e->Submit(std::move(r));
  ASSERT_TRUE(h.ok()) << h.status();
  auto out = Collect(**h);
  ASSERT_EQ(out.size(), 3u);
  int differ = 0;
  for (auto& [index, o] : out) {
    EXPECT_TRUE(o.finished);
    ASSERT_EQ(o.tokens.size(), 20u);
    ASSERT_EQ(o.logprobs.size(), 20u);
    for (const TokenLogprobs& lp : o.logprobs) {
      EXPECT_TRUE(std::isfinite(lp.logprob) && lp.logprob <= 0.0f);
      ASSERT_EQ(lp.top.size(), 4u);
      for (size_t k = 1; k < lp.top.size(); ++k) EXPECT_GE(lp.top[k - 1].logprob, lp.top[k].logprob);
      EXPECT_GE(lp.top[0].logprob, lp.logprob - 1e-5f);  // the most likely is at least the chosen one
    }
    differ += o.tokens != out[0].tokens;
  }
  EXPECT_GE(differ, 1);  // three draws at temperature 1 do not all coincide
}

TEST(EngineGpuTest, GreedyIsTheSameWithDeviceAndHostSampling) {
  auto run = [](bool device) {
    auto e = MakeEngine(device);
    std::vector<std::vector<int>> out;
    if (!e) return out;
    for (int i = 0; i < 3; ++i) {
      Request r = Make(i == 0 ? "Permission is hereby granted" : i == 1 ? "THE SOFTWARE" : "GNU", 24, 0.0f, 1);
      if (i == 1) r.sampling.repetition_penalty = 1.5f, r.sampling.frequency_penalty = 0.7f;
      if (i == 2) r.sampling.logit_bias = {{17, 5.0f}, {18, -100.0f}}, r.sampling.presence_penalty = 1.0f;
      auto h = e->Submit(std::move(r));
      EXPECT_TRUE(h.ok()) << h.status();
      out.push_back(Collect(**h)[0].tokens);
    }
    return out;
  };
  const auto device = run(true), host = run(false);
  ASSERT_EQ(device.size(), 3u);
  EXPECT_EQ(device, host);
}

}  // namespace
}  // namespace nsa
