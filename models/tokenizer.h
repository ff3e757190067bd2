// The model's sentencepiece tokenizer (tokenizer.model in the model directory).
//
// This header includes neither Abseil nor sentencepiece: Debian's sentencepiece_processor.h
// declares its own absl::string_view and cannot share a translation unit with real Abseil, and
// its library carries a protobuf copy that clashes with libprotobuf, so sentencepiece is loaded
// at run time as a module (sentencepiece_shim.cc) and errors travel as plain strings.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace nsa {

class Tokenizer {
 public:
  // Loads a sentencepiece model; on failure returns nullptr and sets *error.
  static std::unique_ptr<Tokenizer> Load(const std::string& path, std::string* error);
  ~Tokenizer();

  std::vector<int> Encode(std::string_view text, bool add_bos) const;
  // Text of a token sequence (byte-fallback pieces joined into UTF-8; an incomplete sequence at
  // the end decodes to U+FFFD).
  std::string Decode(const std::vector<int>& ids) const;
  std::string IdToPiece(int id) const;
  int vocab_size() const;
  int bos_id() const;
  int eos_id() const;
  bool IsControl(int id) const;

  // Trains a BPE model with byte fallback on the UTF-8 text files `inputs` and writes
  // <prefix>.model (and <prefix>.vocab). Ids: <unk> 0, <s> 1, </s> 2. Returns "" on success.
  static std::string Train(const std::vector<std::string>& inputs, const std::string& prefix, int vocab_size,
                           int num_threads);

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace nsa
