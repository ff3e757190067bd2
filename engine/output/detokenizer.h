// Incremental detokenization for streaming: text deltas that concatenate to the decoded output,
// never ending inside a UTF-8 sequence. Decodes a short window of recent tokens rather than the
// whole output, so each step costs O(window), and sentencepiece's handling of a leading "▁" is
// the same for the two strings it compares.
#pragma once

#include <string>
#include <vector>

#include "models/tokenizer.h"

namespace nsa {

class IncrementalDetokenizer {
 public:
  IncrementalDetokenizer(const Tokenizer& tokenizer, const std::vector<int>& prompt);
  // Adds one generated token and returns the text it completes (possibly empty).
  std::string Add(int token);
  const std::vector<int>& tokens() const { return tokens_; }

 private:
  const Tokenizer& tokenizer_;
  std::vector<int> tokens_;
  size_t prefix_offset_;  // start of the window that is decoded for context
  size_t read_offset_;  // tokens before this have been emitted
};

}  // namespace nsa
