// Stop strings on streamed text: matched on the detokenized output across token boundaries, and
// text that might still become a stop string is held back, so a client never receives text the
// stop would have removed. Held-back text always starts on a UTF-8 character boundary.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nsa {

class StopChecker {
 public:
  StopChecker(std::vector<std::string> stops, bool include_stop) : stops_(std::move(stops)), include_(include_stop) {}

  struct Result {
    std::string text;  // safe to emit now
    std::optional<std::string> matched;  // the stop string that ended the output
  };
  // Appends newly decoded text. With check_stops false (before min_tokens) no stop matches, but
  // text is still held back while it could begin one.
  Result Add(std::string_view delta, bool check_stops);
  // The held-back text, when the output ends for another reason.
  std::string Flush();
  const std::string& text() const { return text_; }

 private:
  std::vector<std::string> stops_;
  bool include_;
  std::string text_;  // the whole output text so far
  size_t emitted_ = 0;
  size_t searched_ = 0;  // text_ before this holds no stop string
};

}  // namespace nsa
