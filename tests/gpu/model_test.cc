// The whole model on the GPU (engine/runner/cuda_runner.h) against the CPU float32 reference
// (models/nsa_model.h), on random weights generated on the device and, for the CPU, the same
// weights drawn on the host (models/presets.h: one counter-based generator, bf16-rounded):
//   - logits of a chunked prompt and 100 decode steps against the reference run with bf16 where
//     the GPU keeps bf16 (NsaModel::set_bf16_activations): the median row within 1e-2, 85% of
//     rows within 2e-2, none beyond 0.25 (from the second layer on, rounding differences
//     compound and flip block-score near-ties, and a flipped block moves a row by percents:
//     tiny-paper measured 90/101 rows within 2e-2; one-layer models, where both sides see the
//     same bf16 inputs, must have every row within 2e-2 and every greedy token equal); greedy tokens equal for the first 32 steps (teacher-forced from the
//     reference's greedy run) except at near-ties of the reference's top two; against the
//     float32 reference, the median row;
//   - decode equals prefill at every position on the GPU (every 7th beyond 320 tokens);
//   - a batch with padding (graph bucket) equals each sequence alone; graphs equal eager.
// Presets: tiny and tiny-paper whole; fla-340m and paper at their full attention and layer
// shapes with fewer layers (the CPU reference of 24-30 layers would take minutes per case).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "engine/runner/cuda_runner.h"
#include "engine/runner/direct_batch.h"
#include "models/nsa_model.h"
#include "models/presets.h"
#include "tests/test_util.h"

namespace nsa {
namespace {

struct Case {
  const char* preset;
  int layers;  // 0: the preset's
  int prompt;  // tokens
  int chunk;  // prefill chunk on the GPU
  // One layer: selection sees the same bf16 inputs on both sides (up to summation order), so
  // every row must be close and every greedy token equal.
  bool strict = false;
};

ModelConfig ConfigOf(const Case& c) {
  absl::StatusOr<ModelConfig> config = PresetConfig(c.preset);
  EXPECT_TRUE(config.ok()) << config.status();
  if (c.layers > 0) config->num_layers = c.layers;
  config->max_position_embeddings = 8192;
  return *config;
}

std::unique_ptr<CudaRunner> MakeRunner(const ModelConfig& config, uint64_t seed, bool graphs) {
  CudaRunnerOptions o;
  o.num_pages = 1024;
  o.max_num_seqs = 8;
  o.max_step_tokens = 512;
  o.max_context = 4096;
  o.cuda_graphs = graphs;
  o.progress = false;
  absl::StatusOr<std::unique_ptr<CudaRunner>> r = CudaRunner::Create(config, nullptr, seed, o);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? std::move(*r) : nullptr;
}

int Argmax(const std::vector<float>& v) { return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin()); }

// Greedy tokens of a row: equal, or a near-tie (the reference's margin between its choice and
// the GPU's is within twice the row's largest absolute error), or different.
enum class Greedy { kEqual, kNearTie, kDiffer };
Greedy CompareGreedy(const std::vector<float>& got, const std::vector<float>& want) {
  const int a = Argmax(want), b = Argmax(got);
  if (a == b) return Greedy::kEqual;
  double abs_err = 0;
  for (size_t i = 0; i < got.size(); ++i) abs_err = std::max(abs_err, std::fabs(double(got[i]) - want[i]));
  return want[a] - want[b] <= 2 * abs_err ? Greedy::kNearTie : Greedy::kDiffer;
}

// Prefill `tokens` in chunks of `chunk`; the last chunk's logits.
std::vector<float> Prefill(DirectBatch& batch, int seq, const std::vector<int>& tokens, int chunk) {
  auto out = batch.Prefill(seq, tokens, chunk);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? std::move(*out) : std::vector<float>{};
}

class ModelTest : public ::testing::TestWithParam<Case> {};

TEST_P(ModelTest, LogitsAndGreedyTokensMatchTheCpuReference) {
  const Case& c = GetParam();
  const ModelConfig config = ConfigOf(c);
  const uint64_t seed = 11;
  auto gpu = MakeRunner(config, seed, true);
  ASSERT_NE(gpu, nullptr);
  const ModelWeights weights = RandomModelWeights(config, seed, DType::kBF16);
  // The reference with bf16 where the GPU holds bf16 (strict), and in float32 throughout.
  NsaModel cpu(config, weights), cpu_f32(config, weights);
  cpu.set_bf16_activations(true);

  const std::vector<int> prompt = RandomTokens(c.prompt, config.vocab_size, 5);
  ContiguousKvStore cache = cpu.NewCache(), cache_f32 = cpu_f32.NewCache();
  std::vector<std::vector<float>> want, want_f32;
  std::vector<int> tokens;  // the reference's greedy continuation
  want.push_back(cpu.Forward(prompt, cache));
  want_f32.push_back(cpu_f32.Forward(prompt, cache_f32));
  for (int step = 0; step < 100; ++step) {
    tokens.push_back(Argmax(want.back()));
    want.push_back(cpu.Forward(std::span<const int>(&tokens.back(), 1), cache));
    want_f32.push_back(cpu_f32.Forward(std::span<const int>(&tokens.back(), 1), cache_f32));
  }

  DirectBatch batch(*gpu, 3);
  const int seq = batch.AddSequence();
  std::vector<std::vector<float>> got;
  got.push_back(Prefill(batch, seq, prompt, c.chunk));
  for (int step = 0; step < 100; ++step) {
    DirectBatch::Work w{seq, {tokens[step]}, true};
    auto out = batch.Step({&w, 1});
    ASSERT_TRUE(out.ok()) << out.status();
    got.push_back((*out)[0]);
  }
  // bf16 rounding differences compound through the layers and now and then flip a block-score
  // near-tie: the flipped block moves its row by percents. So: most rows close, none far, and
  // greedy tokens equal except where the reference's top two are closer than the row's error.
  std::vector<double> errors, f32_errors;
  int worst_row = 0, greedy_diffs = 0, near_ties = 0;
  for (size_t r = 0; r < want.size(); ++r) {
    ASSERT_EQ(got[r].size(), want[r].size());
    errors.push_back(MaxRelErr(got[r], want[r]));
    f32_errors.push_back(MaxRelErr(got[r], want_f32[r]));
    if (errors.back() > errors[worst_row]) worst_row = static_cast<int>(r);
    if (r >= 32) continue;
    const Greedy g = CompareGreedy(got[r], want[r]);
    near_ties += g == Greedy::kNearTie;
    greedy_diffs += g == Greedy::kDiffer;
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double worst = errors[worst_row];
  const int close = static_cast<int>(std::count_if(errors.begin(), errors.end(), [](double e) { return e <= 2e-2; }));
  std::printf("[ model ] %s (%d layers): prompt %d + 100 decode steps against the bf16-activation reference: median "
              "relative logit error %.3g, worst %.3g (row %d), %d/%zu rows within 2e-2; against float32: median %.3g, "
              "worst %.3g; greedy: %d of 32 steps differ (%d at near-ties)\n",
              c.preset, config.num_layers, c.prompt, median(errors), worst, worst_row, close, errors.size(), median(f32_errors),
              *std::max_element(f32_errors.begin(), f32_errors.end()), greedy_diffs + near_ties, near_ties);
  EXPECT_LE(median(errors), 1e-2);
  EXPECT_GE(close, 0.85 * errors.size());
  if (c.strict) {
    EXPECT_EQ(close, static_cast<int>(errors.size())) << "one layer: every row within 2e-2";
    EXPECT_EQ(near_ties, 0) << "one layer: every greedy token equal";
  }
  EXPECT_LE(worst, 0.25) << "row " << worst_row;
  EXPECT_EQ(greedy_diffs, 0) << "greedy tokens differ where the reference's top two are apart";
  EXPECT_LE(median(f32_errors), 2e-2);
}

TEST_P(ModelTest, DecodeEqualsPrefillAtEveryPosition) {
  const Case& c = GetParam();
  const ModelConfig config = ConfigOf(c);
  auto gpu = MakeRunner(config, 12, true);
  ASSERT_NE(gpu, nullptr);
  const int n = std::min(c.prompt, 700);
  const std::vector<int> text = RandomTokens(n, config.vocab_size, 6);
  DirectBatch batch(*gpu, 4);
  // One token a step from the start: the logits at every position.
  const int dec = batch.AddSequence();
  std::vector<std::vector<float>> by_decode;
  for (int i = 0; i < n; ++i) {
    DirectBatch::Work w{dec, {text[i]}, true};
    auto out = batch.Step({&w, 1});
    ASSERT_TRUE(out.ok()) << out.status();
    by_decode.push_back((*out)[0]);
  }
  // Prefills of prefixes ending at every position (every 7th beyond 320 tokens, plus block edges,
  // the window and the end), each in chunks, each on fresh pages.
  const NsaParams& p = config.nsa;
  std::vector<int> ends = {1, p.compress_block, p.select_block + 1, p.window, p.window + 1, n / 2, n - 1, n};
  for (int end = 1; end <= n; end += n <= 320 ? 1 : 7) ends.push_back(end);
  // The two paths run the projections at different row counts, so cuBLASLt's summation order and
  // the bf16 roundings differ. With one layer every position must agree; with more, a rounding
  // can flip a near-tie in a later layer's block selection, so a few positions may differ more
  // (as against the CPU reference above), but not by much and not often.
  double worst = 0;
  int checked = 0, close = 0;
  for (int end : ends) {
    if (end < 1 || end > n) continue;
    const int s = batch.AddSequence();
    const std::vector<float> got = Prefill(batch, s, std::vector<int>(text.begin(), text.begin() + end), c.chunk);
    batch.Free(s);
    const double e = MaxRelErr(got, by_decode[end - 1]);
    worst = std::max(worst, e);
    ++checked;
    close += e <= 1e-2;
    if (c.strict) {
      EXPECT_LE(e, 1e-2) << "position " << end - 1;
    }
    EXPECT_LE(e, 0.25) << "position " << end - 1;
  }
  std::printf("[ model ] %s (%d layers): decode vs prefill at %d positions, %d within 1e-2, worst relative logit "
              "error %.3g\n", c.preset, config.num_layers, checked, close, worst);
  EXPECT_GE(close, 0.95 * checked);
}

TEST_P(ModelTest, PaddedBatchEqualsEachSequenceAloneAndGraphsEqualEager) {
  const Case& c = GetParam();
  const ModelConfig config = ConfigOf(c);
  auto graphs = MakeRunner(config, 13, true);
  auto eager = MakeRunner(config, 13, false);
  ASSERT_NE(graphs, nullptr);
  ASSERT_NE(eager, nullptr);
  const int S = 3, steps = 12;  // 3 sequences run in the graph bucket of 4: one padding row
  std::vector<std::vector<int>> prompts;
  for (int i = 0; i < S; ++i) prompts.push_back(RandomTokens(40 + 37 * i, config.vocab_size, 20 + i));
  std::vector<std::vector<int>> next(S);
  for (int i = 0; i < S; ++i) next[i] = RandomTokens(steps, config.vocab_size, 40 + i);

  // Alone, graphs and eager.
  std::vector<std::vector<std::vector<float>>> alone(S), alone_eager(S);
  for (auto [runner, out] : {std::pair{graphs.get(), &alone}, std::pair{eager.get(), &alone_eager}}) {
    for (int i = 0; i < S; ++i) {
      DirectBatch batch(*runner, 7 + i);
      const int s = batch.AddSequence();
      Prefill(batch, s, prompts[i], c.chunk);
      for (int t = 0; t < steps; ++t) {
        DirectBatch::Work w{s, {next[i][t]}, true};
        auto o = batch.Step({&w, 1});
        ASSERT_TRUE(o.ok()) << o.status();
        (*out)[i].push_back((*o)[0]);
      }
    }
  }
  for (int i = 0; i < S; ++i) {
    for (int t = 0; t < steps; ++t) EXPECT_EQ(alone[i][t], alone_eager[i][t]) << "graph replay differs from eager, seq " << i;
  }
  // Together.
  DirectBatch batch(*graphs, 99);
  for (int i = 0; i < S; ++i) Prefill(batch, batch.AddSequence(), prompts[i], c.chunk);
  // The decode kernel splits its work by the batch's size, so the log-sum-exps (and through them
  // the block scores) round differently in a batch than alone. With one layer every row must
  // agree; with more, such a rounding can flip a near-tie in a later layer's block selection, as
  // in DecodeEqualsPrefillAtEveryPosition: a few rows may differ more, not by much and not often.
  double worst = 0;
  int close = 0;
  std::string far;
  for (int t = 0; t < steps; ++t) {
    std::vector<DirectBatch::Work> w;
    for (int i = 0; i < S; ++i) w.push_back({i, {next[i][t]}, true});
    auto o = batch.Step(w);
    ASSERT_TRUE(o.ok()) << o.status();
    for (int i = 0; i < S; ++i) {
      const double e = MaxRelErr((*o)[i], alone[i][t]);
      worst = std::max(worst, e);
      close += e <= 1e-2;
      if (e > 1e-2) far += " seq " + std::to_string(i) + " step " + std::to_string(t) + ": " + std::to_string(e) + ";";
      if (c.strict) {
        EXPECT_LE(e, 1e-2) << "seq " << i << " step " << t;
      }
      EXPECT_LE(e, 0.25) << "seq " << i << " step " << t;
    }
  }
  std::printf("[ model ] %s: batch of 3 (graph bucket 4) vs alone, %d of %d rows within 1e-2, worst relative logit "
              "error %.3g%s; %d graphs\n", c.preset, close, S * steps, worst, far.empty() ? "" : (" (beyond:" + far + ")").c_str(),
              graphs->num_graphs());
  EXPECT_GE(close, 0.95 * S * steps);
  EXPECT_GE(graphs->num_graphs(), 2);  // batch 1 and batch 4
}

// Prefill of long prompts on the GPU, chunked as the scheduler chunks them, against the CPU
// reference (one layer, bf16 activations: both sides select from the same inputs): the last
// prompt position's logits and 8 decode steps after it.
struct LongCase {
  const char* preset;
  int prompt;
  int chunk;
};
class LongPrefillTest : public ::testing::TestWithParam<LongCase> {};

TEST_P(LongPrefillTest, LongPromptMatchesTheCpuReference) {
  const LongCase& c = GetParam();
  ModelConfig config = *PresetConfig(c.preset);
  config.num_layers = 1;
  config.max_position_embeddings = c.prompt + 64;
  CudaRunnerOptions o;
  o.num_pages = 3 * (c.prompt / config.nsa.select_block + 8);
  o.max_num_seqs = 4;
  o.max_step_tokens = c.chunk;
  o.max_context = c.prompt + 64;
  o.progress = false;
  auto gpu = CudaRunner::Create(config, nullptr, 21, o);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  NsaModel cpu(config, RandomModelWeights(config, 21, DType::kBF16));
  cpu.set_bf16_activations(true);
  const std::vector<int> prompt = RandomTokens(c.prompt, config.vocab_size, 9);
  ContiguousKvStore cache = cpu.NewCache();
  std::vector<std::vector<float>> want{cpu.Forward(prompt, cache)};
  std::vector<int> next;
  for (int s = 0; s < 8; ++s) {
    next.push_back(Argmax(want.back()));
    want.push_back(cpu.Forward(std::span<const int>(&next.back(), 1), cache));
  }
  DirectBatch batch(**gpu, 5);
  const int seq = batch.AddSequence();
  std::vector<std::vector<float>> got{Prefill(batch, seq, prompt, c.chunk)};
  for (int s = 0; s < 8; ++s) {
    DirectBatch::Work w{seq, {next[s]}, true};
    auto out = batch.Step({&w, 1});
    ASSERT_TRUE(out.ok()) << out.status();
    got.push_back((*out)[0]);
  }
  double worst = 0;
  for (size_t r = 0; r < want.size(); ++r) worst = std::max(worst, MaxRelErr(got[r], want[r]));
  std::printf("[ model ] %s (1 layer): prompt of %d tokens in chunks of %d + 8 decode steps: worst relative logit error %.3g\n",
              c.preset, c.prompt, c.chunk, worst);
  EXPECT_LE(worst, 2e-2);
  // fla-340m at 64k measured a greedy flip at 2.3e-3 worst error over 32,000 ids: near-ties
  // pass, a real difference fails.
  for (size_t r = 0; r < want.size(); ++r) EXPECT_NE(CompareGreedy(got[r], want[r]), Greedy::kDiffer) << "row " << r;
}

INSTANTIATE_TEST_SUITE_P(Prompts, LongPrefillTest,
                         ::testing::Values(LongCase{"tiny", 131072 - 64, 4096}, LongCase{"tiny-paper", 32768 + 7, 2048},
                                           LongCase{"fla-340m", 65536 + 33, 4096}),
                         [](const auto& info) {
                           std::string s = info.param.preset;
                           std::replace(s.begin(), s.end(), '-', '_');
                           return s + "_" + std::to_string(info.param.prompt);
                         });

INSTANTIATE_TEST_SUITE_P(Presets, ModelTest,
                         ::testing::Values(Case{"tiny", 0, 300, 77}, Case{"tiny-paper", 0, 300, 77},
                                           Case{"tiny", 1, 300, 77, true}, Case{"tiny-paper", 1, 300, 77, true},
                                           Case{"fla-340m", 4, 1300, 500}, Case{"paper", 3, 1300, 500}),
                         [](const auto& info) {
                           std::string s = info.param.preset;
                           std::replace(s.begin(), s.end(), '-', '_');
                           return info.param.layers > 0 ? s + "_" + std::to_string(info.param.layers) + "_layers" : s;
                         });

}  // namespace
}  // namespace nsa
