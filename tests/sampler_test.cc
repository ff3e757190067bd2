// Sampling: greedy is argmax, truncations never emit a token they cut, a seed reproduces its
// draws, and the draws follow the exact processed distribution (chi-square, fixed seeds) for
// temperature, top-k, top-p, min-p, the penalties and logit bias.
#include "engine/sampler/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

namespace nsa {
namespace {

const std::vector<float> kLogits = {2.0f, 1.5f, 1.0f, 0.5f, 0.0f, -0.5f, -1.0f, -3.0f};

TEST(SamplerTest, GreedyIsArgmaxWithLowestIndexOnTies) {
  Sampler s(1);
  SamplingParams p;
  p.temperature = 0;
  std::vector<float> logits = {0.1f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(s.Sample(logits, p, 4).token, 1);
  EXPECT_EQ(s.Sample(logits, p, 1).token, 0);  // ids at or above the limit are never chosen
  const int banned[] = {1};
  EXPECT_EQ(s.Sample(logits, p, 4, nullptr, banned).token, 3);
}

TEST(SamplerTest, SeedReproduces) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = std::sin(i * 1.3f);
  SamplingParams p;
  Sampler a(9), b(9), c(10);
  std::vector<int> da, db, dc;
  for (int i = 0; i < 100; ++i) {
    da.push_back(a.Sample(logits, p, 50).token);
    db.push_back(b.Sample(logits, p, 50).token);
    dc.push_back(c.Sample(logits, p, 50).token);
  }
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
}

// The distribution the sampler must draw from, computed directly from the definitions.
std::vector<double> Expected(std::vector<float> logits, const SamplingParams& p, const TokenHistory* h) {
  const int n = static_cast<int>(logits.size());
  for (auto [t, b] : p.logit_bias) logits[t] += b;
  if (h) {
    for (int t = 0; t < n; ++t) {
      const bool seen = h->prompt_tokens.contains(t) || h->output_counts.contains(t);
      if (seen && p.repetition_penalty != 1.0f) logits[t] = logits[t] > 0 ? logits[t] / p.repetition_penalty : logits[t] * p.repetition_penalty;
      if (h->output_counts.contains(t)) logits[t] -= p.frequency_penalty * h->output_counts.at(t) + p.presence_penalty;
    }
  }
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  std::vector<double> w(n, 0.0);
  for (int i = 0; i < n; ++i) w[order[i]] = std::exp(logits[order[i]] / p.temperature);
  std::vector<char> keep(n, 1);
  if (p.top_k) {
    for (int i = p.top_k; i < n; ++i) keep[order[i]] = 0;
  }
  for (int t = 0; t < n; ++t) {
    if (w[t] < p.min_p * w[order[0]]) keep[t] = 0;
  }
  double mass = 0;
  for (int t = 0; t < n; ++t) mass += keep[t] ? w[t] : 0;
  if (p.top_p < 1) {
    double cum = 0;
    for (int i = 0; i < n; ++i) {
      const int t = order[i];
      if (!keep[t]) continue;
      if (cum >= p.top_p * mass) keep[t] = 0;
      cum += w[t];
    }
  }
  double z = 0;
  for (int t = 0; t < n; ++t) z += keep[t] ? w[t] : 0;
  std::vector<double> prob(n);
  for (int t = 0; t < n; ++t) prob[t] = keep[t] ? w[t] / z : 0;
  return prob;
}

struct Mode {
  const char* name;
  SamplingParams params;
  bool with_history;
};

SamplingParams P(float temperature, float top_p = 1, int top_k = 0, float min_p = 0) {
  SamplingParams p;
  p.temperature = temperature, p.top_p = top_p, p.top_k = top_k, p.min_p = min_p;
  return p;
}

class DistributionTest : public ::testing::TestWithParam<Mode> {};

TEST_P(DistributionTest, ChiSquareAgainstTheExactDistribution) {
  const Mode& m = GetParam();
  TokenHistory history;
  const int prompt[] = {0, 3};
  history.AddPrompt(prompt);
  for (int t : {1, 1, 1, 4, 7}) history.AddOutput(t);
  const TokenHistory* h = m.with_history ? &history : nullptr;
  const std::vector<double> p = Expected(kLogits, m.params, h);
  Sampler s(123);
  std::map<int, int> counts;
  const int draws = 40000;
  for (int i = 0; i < draws; ++i) ++counts[s.Sample(kLogits, m.params, 8, h).token];
  double chi = 0;
  int dof = -1;
  for (size_t t = 0; t < p.size(); ++t) {
    const int got = counts.count(int(t)) ? counts.at(int(t)) : 0;
    if (p[t] == 0) {
      EXPECT_EQ(got, 0) << "token " << t << " was cut but drawn";
      continue;
    }
    ++dof;
    chi += (got - p[t] * draws) * (got - p[t] * draws) / (p[t] * draws);
  }
  // 99.9th percentile of chi-square: 7 dof 24.3 (fewer dof have lower thresholds).
  EXPECT_LT(chi, 24.3) << m.name << " (" << dof << " degrees of freedom)";
}

SamplingParams Penalties() {
  SamplingParams p = P(1);
  p.repetition_penalty = 1.3f, p.frequency_penalty = 0.4f, p.presence_penalty = 0.3f;
  p.logit_bias = {{7, 4.0f}, {0, -1.0f}};
  return p;
}

INSTANTIATE_TEST_SUITE_P(Modes, DistributionTest,
                         ::testing::Values(Mode{"plain", P(1), false}, Mode{"temperature", P(0.5f), false},
                                           Mode{"hot", P(2.5f), false}, Mode{"top_p", P(1, 0.8f), false},
                                           Mode{"top_k", P(1, 1, 3), false}, Mode{"min_p", P(2, 1, 0, 0.3f), false},
                                           Mode{"all_truncations", P(1.5f, 0.9f, 5, 0.1f), false},
                                           Mode{"penalties", Penalties(), true}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(SamplerTest, LogprobsAreOfTheRawDistribution) {
  Sampler s(3);
  SamplingParams p = P(0);
  p.logit_bias = {{7, 50.0f}};  // changes the choice, not the reported distribution
  SampleResult r = s.Sample(kLogits, p, 8, nullptr, {}, 3);
  EXPECT_EQ(r.token, 7);
  double z = 0;
  for (float l : kLogits) z += std::exp(l);
  EXPECT_NEAR(r.logprob, kLogits[7] - std::log(z), 1e-5);
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].token, 0);
  EXPECT_EQ(r.top[2].token, 2);
  EXPECT_NEAR(r.top[0].logprob, kLogits[0] - std::log(z), 1e-5);
}

TEST(SamplerTest, ValidationNamesTheParameter) {
  auto message = [](SamplingParams p) { return std::string(p.Validate(8).message()); };
  SamplingParams p;
  p.temperature = -1;
  EXPECT_NE(message(p).find("temperature"), std::string::npos);
  p = SamplingParams();
  p.top_p = 0;
  EXPECT_NE(message(p).find("top_p"), std::string::npos);
  p = SamplingParams();
  p.top_k = -2;
  EXPECT_NE(message(p).find("top_k"), std::string::npos);
  p = SamplingParams();
  p.min_p = 1.5f;
  EXPECT_NE(message(p).find("min_p"), std::string::npos);
  p = SamplingParams();
  p.repetition_penalty = 0;
  EXPECT_NE(message(p).find("repetition_penalty"), std::string::npos);
  p = SamplingParams();
  p.presence_penalty = 3;
  EXPECT_NE(message(p).find("presence_penalty"), std::string::npos);
  p = SamplingParams();
  p.logit_bias = {{8, 1.0f}};
  EXPECT_NE(message(p).find("outside the vocabulary"), std::string::npos);
  p = SamplingParams();
  p.logit_bias = {{2, 101.0f}};
  EXPECT_NE(message(p).find("[-100, 100]"), std::string::npos);
  EXPECT_TRUE(SamplingParams().Validate(8).ok());
}

}  // namespace
}  // namespace nsa
