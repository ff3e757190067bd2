// Turns logits into a token: temperature (0 = greedy), top-k, top-p and min-p truncation, then a
// draw from a per-request generator seeded once, so a seeded request is reproducible.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>

#include "absl/status/status.h"

namespace nsa {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  float top_p = 1.0f;  // (0, 1]
  int top_k = 0;  // 0 = off
  float min_p = 0.0f;  // [0, 1]
  uint64_t seed = 0;

  // Checks ranges; the message names the parameter and its allowed range.
  absl::Status Validate() const;
};

class Sampler {
 public:
  explicit Sampler(uint64_t seed) : rng_(seed) {}
  // Samples from logits[0, vocab_limit); ids at or above vocab_limit are never chosen.
  int Sample(std::span<const float> logits, const SamplingParams& params, int vocab_limit);

 private:
  std::mt19937_64 rng_;
};

}  // namespace nsa
