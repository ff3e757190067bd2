#include "engine/output/detokenizer.h"

#include <algorithm>

namespace nsa {
namespace {

bool EndsIncomplete(const std::string& s) {
  // sentencepiece decodes a dangling byte-fallback sequence as U+FFFD (EF BF BD).
  return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}

std::string DecodeRange(const Tokenizer& tok, const std::vector<int>& ids, size_t begin, size_t end) {
  return tok.Decode(std::vector<int>(ids.begin() + begin, ids.begin() + end));
}

}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, const std::vector<int>& prompt)
    : tokenizer_(tokenizer),
      tokens_(prompt),
      prefix_offset_(prompt.size() > 5 ? prompt.size() - 5 : 0),
      read_offset_(prompt.size()) {}

std::string IncrementalDetokenizer::Add(int token) {
  tokens_.push_back(token);
  const std::string before = DecodeRange(tokenizer_, tokens_, prefix_offset_, read_offset_);
  const std::string after = DecodeRange(tokenizer_, tokens_, prefix_offset_, tokens_.size());
  if (after.size() <= before.size() || EndsIncomplete(after)) return "";
  std::string delta = after.substr(before.size());
  prefix_offset_ = read_offset_;
  read_offset_ = tokens_.size();
  return delta;
}

}  // namespace nsa
