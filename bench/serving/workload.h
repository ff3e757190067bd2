// The prompts a benchmark sends: synthetic (random token ids of exact lengths drawn from a
// weighted mix, e.g. 8192:0.5,65536:0.5, each length spread by --range-ratio as vLLM's random
// dataset does: uniform in [floor(L * (1 - r)), ceil(L * (1 + r))]) or read from a JSONL file
// (one object per line: "prompt" as text or a list of token ids, optional "output_len").
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace nsa::bench {

struct Prompt {
  std::vector<int> token_ids;  // sent as ids when text is empty
  std::string text;            // sent as text when set (dataset text, or openai-chat's rendering)
  int64_t input_len = 0;       // tokens as sent; 0 when only the server can tell (text)
  int64_t output_len = 0;      // max_tokens (exact with ignore_eos)
  bool has_text() const { return !text.empty(); }
};

// Lengths with weights: "1024" or "8192:0.5,65536:0.5" (weights need not sum to 1).
struct LengthMix {
  std::vector<std::pair<int64_t, double>> entries;
  int64_t max() const;
  std::string ToString() const;
};
absl::StatusOr<LengthMix> ParseLengthMix(const std::string& text, const char* flag);

struct SyntheticOptions {
  int64_t num = 0;
  LengthMix input, output;
  double range_ratio = 0;
  int vocab_size = 2048;
  uint64_t seed = 0;
};

// The first ids of a sentencepiece vocabulary are unk, bos and eos: synthetic prompts leave
// them out and draw uniformly from [kFirstRegularTokenId, vocab_size).
inline constexpr int kFirstRegularTokenId = 3;

// Seeded: the same options give the same prompts.
std::vector<Prompt> SyntheticPrompts(const SyntheticOptions& o);

// Reads a JSONL dataset; lines without "output_len" take default_output_len. Errors name the
// file and line.
absl::StatusOr<std::vector<Prompt>> ReadDataset(const std::string& path, int64_t default_output_len);

}  // namespace nsa::bench
