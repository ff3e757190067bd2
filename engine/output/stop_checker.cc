#include "engine/output/stop_checker.h"

#include <algorithm>

namespace nsa {

StopChecker::Result StopChecker::Add(std::string_view delta, bool check_stops) {
  text_.append(delta);
  Result r;
  if (check_stops) {
    // Earliest match that ends in the new text; start far enough back for one straddling it.
    size_t best = std::string::npos;
    const std::string* which = nullptr;
    for (const std::string& s : stops_) {
      const size_t from = searched_ >= s.size() ? searched_ - s.size() + 1 : 0;
      const size_t pos = text_.find(s, from);
      if (pos != std::string::npos && pos < best) best = pos, which = &s;
    }
    if (which != nullptr) {
      const size_t end = best + (include_ ? which->size() : 0);
      r.text = text_.substr(emitted_, end > emitted_ ? end - emitted_ : 0);
      emitted_ = std::max(emitted_, end);
      r.matched = *which;
      return r;
    }
  }
  searched_ = text_.size();
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& s : stops_) {
    for (size_t k = std::min(s.size() - 1, text_.size()); k > hold; --k) {
      if (text_.compare(text_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  size_t safe = text_.size() - hold;
  while (safe > emitted_ && safe < text_.size() && (static_cast<unsigned char>(text_[safe]) & 0xC0) == 0x80) --safe;
  if (safe > emitted_) {
    r.text = text_.substr(emitted_, safe - emitted_);
    emitted_ = safe;
  }
  return r;
}

std::string StopChecker::Flush() {
  std::string rest = text_.substr(std::min(emitted_, text_.size()));
  emitted_ = text_.size();
  return rest;
}

}  // namespace nsa
