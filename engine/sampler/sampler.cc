#include "engine/sampler/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace nsa {

absl::Status SamplingParams::Validate(int vocab_size) const {
  auto bad = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) return bad("temperature must be >= 0 (0 = greedy), got ", temperature);
  if (!(top_p > 0.0f && top_p <= 1.0f)) return bad("top_p must be in (0, 1], got ", top_p);
  if (top_k < 0) return bad("top_k must be >= 0 (0 = off), got ", top_k);
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return bad("min_p must be in [0, 1], got ", min_p);
  if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty)) {
    return bad("repetition_penalty must be > 0 (1 = off), got ", repetition_penalty);
  }
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f)) return bad("presence_penalty must be in [-2, 2], got ", presence_penalty);
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f)) {
    return bad("frequency_penalty must be in [-2, 2], got ", frequency_penalty);
  }
  for (const auto& [token, bias] : logit_bias) {
    if (token < 0 || token >= vocab_size) return bad("logit_bias names token ", token, ", outside the vocabulary [0, ", vocab_size, ")");
    if (!(bias >= -100.0f && bias <= 100.0f)) return bad("logit_bias for token ", token, " must be in [-100, 100], got ", bias);
  }
  return absl::OkStatus();
}

namespace {

int Draw(std::span<const float> logits, const SamplingParams& params, double u01) {
  const int n = static_cast<int>(logits.size());
  const float top = *std::max_element(logits.begin(), logits.end());
  // Candidates: every id, or the top-k sorted by logit (ties: lower id first).
  auto by_logit = [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::vector<int> ids;
  if (params.top_k > 0 && params.top_k < n) {
    ids.resize(n);
    std::iota(ids.begin(), ids.end(), 0);
    std::nth_element(ids.begin(), ids.begin() + params.top_k - 1, ids.end(), by_logit);
    ids.resize(params.top_k);
    std::sort(ids.begin(), ids.end(), by_logit);
  } else {
    ids.reserve(n);
    for (int i = 0; i < n; ++i) ids.push_back(i);
  }
  // Weights relative to the most likely token (its weight is 1); min-p drops those below min_p.
  const float inv_t = 1.0f / params.temperature;
  std::vector<float> w(n, 0.0f);
  double mass = 0;
  size_t kept = 0;
  for (int id : ids) {
    const float x = std::exp((logits[id] - top) * inv_t);
    if (x < params.min_p) continue;
    w[id] = x;
    mass += x;
    ids[kept++] = id;
  }
  ids.resize(kept);
  if (params.top_p < 1.0f) {
    // The smallest set of most likely tokens whose share of the mass reaches top_p, in O(V):
    // bucket the weights by their float exponent and top mantissa bits (monotone in the
    // weight), find the bucket where the mass from the top crosses top_p, and sort only it.
    const double target = params.top_p * mass;
    constexpr uint32_t kOne = 0x3F800000u >> 20;  // key of weight 1.0
    constexpr int kBuckets = 1024;
    auto bucket = [&](float x) {
      uint32_t bits;
      std::memcpy(&bits, &x, sizeof(bits));
      return std::min<int>(kBuckets - 1, static_cast<int>(kOne - (bits >> 20)));
    };
    std::vector<double> bucket_mass(kBuckets, 0.0);
    for (int id : ids) bucket_mass[bucket(w[id])] += w[id];
    double above = 0;
    int edge = 0;
    while (edge < kBuckets - 1 && above + bucket_mass[edge] < target) above += bucket_mass[edge++];
    std::vector<int> keep, boundary;
    for (int id : ids) {
      const int b = bucket(w[id]);
      if (b < edge) keep.push_back(id);
      if (b == edge) boundary.push_back(id);
    }
    std::sort(boundary.begin(), boundary.end(), [&](int a, int b) { return w[a] > w[b] || (w[a] == w[b] && a < b); });
    double cum = above;
    for (int id : boundary) {
      if (cum >= target) break;
      cum += w[id];
      keep.push_back(id);
    }
    ids = std::move(keep);
    mass = cum;
  }
  // uniform_real_distribution(0, mass) computes mass x canonical: the same value.
  const double u = mass * u01;
  double cum = 0;
  for (int id : ids) {
    cum += w[id];
    if (u < cum) return id;
  }
  return ids.back();
}

}  // namespace

SampleResult SampleWithUniform(std::span<const float> raw, const SamplingParams& params, int vocab_limit,
                               const TokenHistory* history, std::span<const int> banned, int num_top, double u) {
  const int n = std::min<int>(vocab_limit, static_cast<int>(raw.size()));
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  std::vector<float> logits(raw.begin(), raw.begin() + n);
  for (const auto& [token, bias] : params.logit_bias) {
    if (token < n) logits[token] += bias;
  }
  for (int token : banned) {
    if (token >= 0 && token < n) logits[token] = kNegInf;
  }
  if (history != nullptr && params.NeedsPenalties()) {
    const float r = params.repetition_penalty;
    if (r != 1.0f) {
      auto penalise = [&](int t) {
        if (t < n && logits[t] != kNegInf) logits[t] = logits[t] > 0 ? logits[t] / r : logits[t] * r;
      };
      // Each token once, whether it was in the prompt, the output or both.
      for (const auto& [t, unused] : history->prompt_tokens) penalise(t);
      for (const auto& [t, count] : history->output_counts) {
        if (!history->prompt_tokens.contains(t)) penalise(t);
      }
    }
    for (const auto& [t, count] : history->output_counts) {
      if (t < n) logits[t] -= params.frequency_penalty * count + params.presence_penalty;
    }
  }

  SampleResult result;
  if (params.temperature == 0.0f) {
    result.token = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  } else {
    result.token = Draw(logits, params, u);
  }

  if (num_top >= 0) {
    // Log-softmax of the raw logits.
    const float max_raw = *std::max_element(raw.begin(), raw.begin() + n);
    double z = 0;
    for (int i = 0; i < n; ++i) z += std::exp(static_cast<double>(raw[i]) - max_raw);
    const double log_z = max_raw + std::log(z);
    result.logprob = static_cast<float>(raw[result.token] - log_z);
    std::vector<int> ids(n);
    std::iota(ids.begin(), ids.end(), 0);
    const int k = std::min(num_top, n);
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(),
                      [&](int a, int b) { return raw[a] > raw[b] || (raw[a] == raw[b] && a < b); });
    for (int i = 0; i < k; ++i) result.top.push_back({ids[i], static_cast<float>(raw[ids[i]] - log_z)});
  }
  return result;
}

}  // namespace nsa
