// Turns one sequence's logits into its next token, in vLLM's order:
//
//   logit bias -> min_tokens (EOS and stop ids masked) -> repetition, frequency and presence
//   penalties -> temperature (0 = greedy) -> min-p -> top-k -> top-p -> a draw
//
// from a generator owned by the sequence and seeded once, so a seeded sequence draws the same
// tokens alone or in any batch, and after preemption. Logprobs are of the raw model
// distribution (log-softmax of the logits as the model produced them).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"

namespace nsa {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  float top_p = 1.0f;  // (0, 1]
  int top_k = 0;  // 0 = off
  float min_p = 0.0f;  // [0, 1]
  float repetition_penalty = 1.0f;  // > 0; 1 = off. Prompt and output tokens.
  float presence_penalty = 0.0f;  // [-2, 2]; output tokens
  float frequency_penalty = 0.0f;  // [-2, 2]; output tokens
  std::vector<std::pair<int, float>> logit_bias;  // token -> added to its logit, [-100, 100]
  uint64_t seed = 0;

  // Checks ranges against a vocabulary; the message names the parameter and its allowed range.
  absl::Status Validate(int vocab_size) const;
  bool NeedsPenalties() const {
    return repetition_penalty != 1.0f || presence_penalty != 0.0f || frequency_penalty != 0.0f;
  }
};

// The tokens a sequence has seen, for the penalties.
struct TokenHistory {
  absl::flat_hash_map<int, int> output_counts;
  absl::flat_hash_map<int, char> prompt_tokens;
  void AddPrompt(std::span<const int> prompt) {
    for (int t : prompt) prompt_tokens[t] = 1;
  }
  void AddOutput(int token) { ++output_counts[token]; }
};

struct Logprob {
  int token;
  float logprob;
};

struct SampleResult {
  int token = 0;
  float logprob = 0;  // of the chosen token, raw distribution
  std::vector<Logprob> top;  // the num_top most likely tokens, raw distribution
};

// Samples from logits[0, vocab_limit); ids at or above vocab_limit are never chosen. `banned` ids
// (EOS and stop ids before min_tokens) are masked. num_top < 0: no logprobs. `u` in [0, 1)
// picks the token (unused when greedy): the draw is the first kept token whose cumulative
// weight exceeds u x the kept mass.
SampleResult SampleWithUniform(std::span<const float> logits, const SamplingParams& params, int vocab_limit,
                               const TokenHistory* history, std::span<const int> banned, int num_top, double u);

class Sampler {
 public:
  explicit Sampler(uint64_t seed) : rng_(seed) {}
  // SampleWithUniform with the next uniform of this sequence's generator (none when greedy).
  SampleResult Sample(std::span<const float> logits, const SamplingParams& params, int vocab_limit,
                      const TokenHistory* history = nullptr, std::span<const int> banned = {}, int num_top = -1) {
    return SampleWithUniform(logits, params, vocab_limit, history, banned, num_top, UniformFor(params));
  }
  // The uniform a draw with these params consumes: one from the generator, or none (0) when
  // greedy. Device sampling takes it here, so a seeded sequence draws the same stream on either
  // backend.
  double UniformFor(const SamplingParams& params) {
    return params.temperature == 0.0f ? 0.0 : std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
  }

 private:
  std::mt19937_64 rng_;
};

}  // namespace nsa
