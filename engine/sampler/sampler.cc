#include "engine/sampler/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"

namespace nsa {

absl::Status SamplingParams::Validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) {
    return absl::InvalidArgumentError(absl::StrCat("temperature must be >= 0 (0 = greedy), got ", temperature));
  }
  if (!(top_p > 0.0f && top_p <= 1.0f)) return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", top_p));
  if (top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0 (0 = off), got ", top_k));
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return absl::InvalidArgumentError(absl::StrCat("min_p must be in [0, 1], got ", min_p));
  return absl::OkStatus();
}

int Sampler::Sample(std::span<const float> logits, const SamplingParams& params, int vocab_limit) {
  const int n = std::min<int>(vocab_limit, static_cast<int>(logits.size()));
  if (params.temperature == 0.0f) {
    return static_cast<int>(std::max_element(logits.begin(), logits.begin() + n) - logits.begin());
  }
  // Candidates sorted by logit, descending; ties keep the lower id first.
  std::vector<int> ids(n);
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  int keep = n;
  if (params.top_k > 0) keep = std::min(keep, params.top_k);

  std::vector<double> prob(keep);
  const double max_logit = logits[ids[0]];
  double sum = 0;
  for (int i = 0; i < keep; ++i) {
    prob[i] = std::exp((logits[ids[i]] - max_logit) / params.temperature);
    sum += prob[i];
  }
  for (double& p : prob) p /= sum;
  if (params.min_p > 0.0f) {
    const double floor = params.min_p * prob[0];
    int k = 1;
    while (k < keep && prob[k] >= floor) ++k;
    keep = k;
  }
  if (params.top_p < 1.0f) {
    // Smallest prefix whose mass reaches top_p.
    double cum = 0;
    int k = 0;
    while (k < keep) {
      cum += prob[k++];
      if (cum >= params.top_p) break;
    }
    keep = k;
  }
  double mass = 0;
  for (int i = 0; i < keep; ++i) mass += prob[i];
  const double u = std::uniform_real_distribution<double>(0.0, mass)(rng_);
  double cum = 0;
  for (int i = 0; i < keep; ++i) {
    cum += prob[i];
    if (u < cum) return ids[i];
  }
  return ids[keep - 1];
}

}  // namespace nsa
