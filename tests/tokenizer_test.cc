// The trained sentencepiece tokenizer and streaming detokenization: deltas concatenate to the
// decoded text and never end inside a UTF-8 sequence, multi-byte characters included.
#include <gtest/gtest.h>

#include <random>

#include "engine/output/detokenizer.h"
#include "models/tokenizer.h"

namespace nsa {
namespace {

std::unique_ptr<Tokenizer> Load() {
  std::string error;
  auto tok = Tokenizer::Load(std::string(NSA_TEST_MODELS) + "/tiny/tokenizer.model", &error);
  EXPECT_NE(tok, nullptr) << error;
  return tok;
}

bool ValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    const int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (int k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    }
    i += n;
  }
  return true;
}

TEST(TokenizerTest, SpecialIdsAndRoundTrip) {
  auto tok = Load();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 2048);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_TRUE(tok->IsControl(1));
  const std::string text = "Permission is hereby granted, free of charge, to any person: 12345 ünïcödé 日本語 ∑ 🙂";
  std::vector<int> ids = tok->Encode(text, true);
  ASSERT_GT(ids.size(), 10u);
  EXPECT_EQ(ids[0], 1);
  // English license text compresses well: the trained merges are real.
  EXPECT_LT(tok->Encode("Permission is hereby granted, free of charge", false).size(), 15u);
  ids.erase(ids.begin());
  EXPECT_EQ(tok->Decode(ids), text);  // byte fallback: nothing is lost
}

TEST(TokenizerTest, LoadFailureNamesThePath) {
  std::string error;
  EXPECT_EQ(Tokenizer::Load("/nonexistent/tokenizer.model", &error), nullptr);
  EXPECT_NE(error.find("/nonexistent/tokenizer.model"), std::string::npos);
}

TEST(DetokenizerTest, DeltasConcatenateToTheTextAndStayValidUtf8) {
  auto tok = Load();
  ASSERT_NE(tok, nullptr);
  const std::vector<std::string> texts = {
      "The Software is provided \"as is\", without warranty of any kind.",
      "naïve café — 日本語のテキスト 🙂🙂 ∀x∃y", "  leading spaces\nnew lines\tand tabs  "};
  for (const std::string& text : texts) {
    const std::vector<int> prompt = tok->Encode("Prompt:", true);
    const std::vector<int> ids = tok->Encode(text, false);
    IncrementalDetokenizer detok(*tok, prompt);
    std::string streamed;
    for (int id : ids) {
      const std::string delta = detok.Add(id);
      EXPECT_TRUE(ValidUtf8(delta)) << "delta splits a character in: " << text;
      streamed += delta;
    }
    std::vector<int> all = prompt;
    all.insert(all.end(), ids.begin(), ids.end());
    const std::string whole = tok->Decode(all), head = tok->Decode(prompt);
    EXPECT_EQ(head + streamed, whole) << text;
  }
}

TEST(DetokenizerTest, RandomTokenStreams) {
  // Random ids include lone byte-fallback pieces: text may hold U+FFFD, but every delta stays
  // valid UTF-8 and nothing is dropped once a sequence completes.
  auto tok = Load();
  ASSERT_NE(tok, nullptr);
  std::mt19937 rng(17);
  std::uniform_int_distribution<int> pick(3, tok->vocab_size() - 1);
  for (int trial = 0; trial < 50; ++trial) {
    IncrementalDetokenizer detok(*tok, {1});
    for (int i = 0; i < 40; ++i) EXPECT_TRUE(ValidUtf8(detok.Add(pick(rng))));
  }
}

}  // namespace
}  // namespace nsa
