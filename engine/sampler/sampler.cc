#include "engine/sampler/sampler.h"

#include <algorithm>
#include <cmath>
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

SampleResult Sampler::Sample(std::span<const float> raw, const SamplingParams& params, int vocab_limit,
                             const TokenHistory* history, std::span<const int> banned, int num_top) {
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

  SampleResult result{0};
  if (params.temperature == 0.0f) {
    result.token = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  } else {
    // Candidates by logit, descending; ties keep the lower id first.
    std::vector<int> ids(n);
    std::iota(ids.begin(), ids.end(), 0);
    const int k = params.top_k > 0 ? std::min(params.top_k, n) : n;
    auto by_logit = [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), by_logit);
    int keep = k;
    std::vector<double> prob(keep);
    const double top = logits[ids[0]];
    for (int i = 0; i < keep; ++i) prob[i] = std::exp((logits[ids[i]] - top) / params.temperature);
    if (params.min_p > 0.0f) {
      // Relative to the most likely token, so it commutes with top-k.
      int kept = 1;
      while (kept < keep && prob[kept] >= params.min_p * prob[0]) ++kept;
      keep = kept;
    }
    double mass = std::accumulate(prob.begin(), prob.begin() + keep, 0.0);
    if (params.top_p < 1.0f) {
      // Smallest prefix whose share of what is left reaches top_p.
      double cum = 0;
      int kept = 0;
      while (kept < keep) {
        cum += prob[kept++];
        if (cum >= params.top_p * mass) break;
      }
      keep = kept;
      mass = cum;
    }
    const double u = std::uniform_real_distribution<double>(0.0, mass)(rng_);
    double cum = 0;
    result.token = ids[keep - 1];
    for (int i = 0; i < keep; ++i) {
      cum += prob[i];
      if (u < cum) {
        result.token = ids[i];
        break;
      }
    }
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
