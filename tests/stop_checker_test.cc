// Stop strings on streamed text: matches across deltas, held-back text that never splits a
// UTF-8 character, include/trim, and min_tokens (no matching before it).
#include "engine/output/stop_checker.h"

#include <gtest/gtest.h>

namespace nsa {
namespace {

std::string Stream(StopChecker& c, const std::vector<std::string>& deltas, std::optional<std::string>* matched) {
  std::string out;
  for (const std::string& d : deltas) {
    StopChecker::Result r = c.Add(d, true);
    out += r.text;
    if (r.matched) {
      *matched = r.matched;
      return out;
    }
  }
  return out + c.Flush();
}

TEST(StopCheckerTest, MatchAcrossDeltasTrimmedOrIncluded) {
  for (bool include : {false, true}) {
    StopChecker c({"END"}, include);
    std::optional<std::string> m;
    EXPECT_EQ(Stream(c, {"hello E", "N", "D and more"}, &m), include ? "hello END" : "hello ");
    EXPECT_EQ(m, "END");
  }
}

TEST(StopCheckerTest, HoldsBackOnlyWhatCouldStartAStop) {
  StopChecker c({"stop"}, false);
  EXPECT_EQ(c.Add("abc s", true).text, "abc ");  // "s" may begin "stop"
  EXPECT_EQ(c.Add("t", true).text, "");
  EXPECT_EQ(c.Add("x", true).text, "stx");  // not a stop after all: released
  EXPECT_EQ(c.Add("yz", true).text, "yz");
  EXPECT_EQ(c.Flush(), "");
}

TEST(StopCheckerTest, MultiByteCharactersAreNeverSplit) {
  // The stop string's first character is multi-byte; a held-back tail starts on a boundary.
  StopChecker c({"日本語です"}, false);
  std::optional<std::string> m;
  const std::string out = Stream(c, {"これは日", "本", "語で", "す。"}, &m);
  EXPECT_EQ(out, "これは");
  EXPECT_EQ(m, "日本語です");
  StopChecker d({"éclair"}, false);
  std::string all;
  for (std::string piece : {"caf", "é", "é", "cl", "!"}) {
    const std::string t = d.Add(piece, true).text;
    // Every delta is whole characters: no byte of a two-byte é is left dangling.
    for (size_t i = 0; i < t.size(); ++i) {
      if (static_cast<unsigned char>(t[i]) == 0xC3) ASSERT_LT(i + 1, t.size());
    }
    all += t;
  }
  all += d.Flush();
  EXPECT_EQ(all, "caféécl!");
}

TEST(StopCheckerTest, NoMatchBeforeMinTokensButNothingLost) {
  StopChecker c({"ab"}, false);
  std::string out = c.Add("xab", false).text;  // before min_tokens: not a stop
  StopChecker::Result r = c.Add("cab", true);
  out += r.text;
  EXPECT_EQ(r.matched, "ab");
  EXPECT_EQ(out, "xabc");
}

TEST(StopCheckerTest, EarliestOfSeveralStops) {
  StopChecker c({"zz", "b"}, true);
  std::optional<std::string> m;
  EXPECT_EQ(Stream(c, {"aazzb"}, &m), "aazz");
  EXPECT_EQ(m, "zz");
}

}  // namespace
}  // namespace nsa
