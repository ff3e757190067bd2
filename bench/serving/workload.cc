#include "bench/serving/workload.h"

#include <cmath>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace nsa::bench {

int64_t LengthMix::max() const {
  int64_t m = 0;
  for (const auto& [len, w] : entries) m = std::max(m, len);
  return m;
}

std::string LengthMix::ToString() const {
  if (entries.size() == 1) return absl::StrCat(entries[0].first);
  return absl::StrJoin(entries, ",", [](std::string* out, const std::pair<int64_t, double>& e) {
    absl::StrAppend(out, e.first, ":", e.second);
  });
}

absl::StatusOr<LengthMix> ParseLengthMix(const std::string& text, const char* flag) {
  LengthMix mix;
  const std::vector<absl::string_view> parts = absl::StrSplit(text, ',', absl::SkipWhitespace());
  for (absl::string_view part : parts) {
    const std::vector<absl::string_view> lw = absl::StrSplit(absl::StripAsciiWhitespace(part), ':');
    int64_t len = 0;
    double weight = 1;
    const bool ok = (lw.size() == 1 || lw.size() == 2) && absl::SimpleAtoi(lw[0], &len) &&
                    (lw.size() == 1 || absl::SimpleAtod(lw[1], &weight));
    if (!ok || (lw.size() == 1 && parts.size() > 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", flag, ": '", part, "' is not LENGTH or LENGTH:WEIGHT (e.g. 1024, or 8192:0.5,65536:0.5 for a mix)"));
    }
    if (len < 1) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": lengths must be >= 1, got ", len));
    if (!(weight > 0) || !std::isfinite(weight)) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": weights must be positive, got ", lw[1]));
    }
    mix.entries.emplace_back(len, weight);
  }
  if (mix.entries.empty()) return absl::InvalidArgumentError(absl::StrCat("--", flag, " is empty"));
  return mix;
}

namespace {

// vLLM's random dataset: uniform in [floor(L (1 - r)), ceil(L (1 + r))], at least 1.
int64_t DrawLength(const LengthMix& mix, double range_ratio, std::mt19937_64& rng) {
  std::vector<double> weights;
  for (const auto& [len, w] : mix.entries) weights.push_back(w);
  std::discrete_distribution<size_t> pick(weights.begin(), weights.end());
  const double len = static_cast<double>(mix.entries[mix.entries.size() == 1 ? 0 : pick(rng)].first);
  // The 1e-9 keeps 100 * 1.1 = 110.00000000000001 from rounding up to 111.
  const int64_t lo = std::max<int64_t>(1, static_cast<int64_t>(std::floor(len * (1 - range_ratio) + 1e-9)));
  const int64_t hi = std::max<int64_t>(lo, static_cast<int64_t>(std::ceil(len * (1 + range_ratio) - 1e-9)));
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

}  // namespace

std::vector<Prompt> SyntheticPrompts(const SyntheticOptions& o) {
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int> token(kFirstRegularTokenId, o.vocab_size - 1);
  std::vector<Prompt> prompts(static_cast<size_t>(o.num));
  for (Prompt& p : prompts) {
    p.input_len = DrawLength(o.input, o.range_ratio, rng);
    p.output_len = DrawLength(o.output, o.range_ratio, rng);
    p.token_ids.resize(static_cast<size_t>(p.input_len));
    for (int& t : p.token_ids) t = token(rng);
  }
  return prompts;
}

absl::StatusOr<std::vector<Prompt>> ReadDataset(const std::string& path, int64_t default_output_len) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--dataset: cannot open ", path));
  std::vector<Prompt> prompts;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    auto fail = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat("--dataset: ", path, " line ", line_no, ": ", why));
    };
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) return fail("not a JSON object");
    auto it = j.find("prompt");
    if (it == j.end()) return fail("no \"prompt\"");
    Prompt p;
    if (it->is_string()) {
      p.text = it->get<std::string>();
      if (p.text.empty()) return fail("empty \"prompt\"");
    } else if (it->is_array() && !it->empty() &&
               std::all_of(it->begin(), it->end(), [](const nlohmann::json& t) { return t.is_number_integer(); })) {
      p.token_ids = it->get<std::vector<int>>();
      p.input_len = static_cast<int64_t>(p.token_ids.size());
    } else {
      return fail("\"prompt\" must be a non-empty string or a non-empty list of token ids");
    }
    p.output_len = default_output_len;
    if (auto o = j.find("output_len"); o != j.end()) {
      if (!o->is_number_integer() || o->get<int64_t>() < 1) return fail("\"output_len\" must be an integer >= 1");
      p.output_len = o->get<int64_t>();
    }
    prompts.push_back(std::move(p));
  }
  if (prompts.empty()) return absl::InvalidArgumentError(absl::StrCat("--dataset: ", path, " has no prompts"));
  return prompts;
}

}  // namespace nsa::bench
