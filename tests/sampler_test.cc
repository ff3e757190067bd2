// Sampling: greedy is argmax, truncations never emit a token they cut, a seed reproduces its
// draws, and the draws follow the truncated distribution (chi-square, fixed seed).
#include "engine/sampler/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

namespace nsa {
namespace {

TEST(SamplerTest, GreedyIsArgmaxWithLowestIndexOnTies) {
  Sampler s(1);
  SamplingParams p;
  p.temperature = 0;
  std::vector<float> logits = {0.1f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(s.Sample(logits, p, 4), 1);
  EXPECT_EQ(s.Sample(logits, p, 1), 0);  // ids at or above the limit are never chosen
}

TEST(SamplerTest, SeedReproduces) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = std::sin(i * 1.3f);
  SamplingParams p;
  Sampler a(9), b(9), c(10);
  std::vector<int> da, db, dc;
  for (int i = 0; i < 100; ++i) {
    da.push_back(a.Sample(logits, p, 50));
    db.push_back(b.Sample(logits, p, 50));
    dc.push_back(c.Sample(logits, p, 50));
  }
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
}

// Chi-square of `draws` samples against the expected probabilities (0 outside the support).
double ChiSquare(const std::vector<double>& expected, const std::map<int, int>& counts, int draws) {
  double chi = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const int got = counts.count(int(i)) ? counts.at(int(i)) : 0;
    if (expected[i] == 0) {
      EXPECT_EQ(got, 0) << "token " << i << " was cut but drawn";
      continue;
    }
    const double e = expected[i] * draws;
    chi += (got - e) * (got - e) / e;
  }
  return chi;
}

TEST(SamplerTest, TruncationsFollowTheExactDistribution) {
  const std::vector<float> logits = {2.0f, 1.5f, 1.0f, 0.5f, 0.0f, -0.5f, -1.0f, -3.0f};
  struct Mode {
    float temperature, top_p;
    int top_k;
    float min_p;
  };
  for (Mode m : {Mode{1, 1, 0, 0}, Mode{0.5f, 1, 0, 0}, Mode{1, 0.8f, 0, 0}, Mode{1, 1, 3, 0}, Mode{2, 1, 0, 0.3f}}) {
    // The exact truncated distribution, computed directly.
    std::vector<double> p(logits.size());
    double z = 0;
    for (size_t i = 0; i < p.size(); ++i) z += p[i] = std::exp(logits[i] / m.temperature);
    for (double& x : p) x /= z;
    int keep = int(p.size());
    if (m.top_k) keep = m.top_k;
    if (m.min_p > 0) {
      int k = 0;
      while (k < keep && p[k] >= m.min_p * p[0]) ++k;
      keep = k;
    }
    if (m.top_p < 1) {
      double cum = 0;
      int k = 0;
      while (k < keep && cum < m.top_p) cum += p[k++];
      keep = k;
    }
    double mass = 0;
    for (int i = 0; i < int(p.size()); ++i) i < keep ? mass += p[i] : p[i] = 0;
    for (double& x : p) x /= mass;

    SamplingParams params;
    params.temperature = m.temperature, params.top_p = m.top_p, params.top_k = m.top_k, params.min_p = m.min_p;
    Sampler s(123);
    std::map<int, int> counts;
    const int draws = 40000;
    for (int i = 0; i < draws; ++i) ++counts[s.Sample(logits, params, 8)];
    // 99.9th percentile of chi-square with at most 7 degrees of freedom is 24.3.
    EXPECT_LT(ChiSquare(p, counts, draws), 24.3) << "T=" << m.temperature << " top_p=" << m.top_p << " top_k=" << m.top_k
                                                 << " min_p=" << m.min_p;
  }
}

TEST(SamplerTest, ValidationNamesTheParameter) {
  SamplingParams p;
  p.temperature = -1;
  EXPECT_NE(p.Validate().message().find("temperature"), absl::string_view::npos);
  p = SamplingParams();
  p.top_p = 0;
  EXPECT_NE(p.Validate().message().find("top_p"), absl::string_view::npos);
  p = SamplingParams();
  p.top_k = -2;
  EXPECT_NE(p.Validate().message().find("top_k"), absl::string_view::npos);
  p = SamplingParams();
  p.min_p = 1.5f;
  EXPECT_NE(p.Validate().message().find("min_p"), absl::string_view::npos);
  EXPECT_TRUE(SamplingParams().Validate().ok());
}

}  // namespace
}  // namespace nsa
