#include "bench/serving/serving_metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace nsa::bench {

void ChunkTimer::OnChunk(double t, RequestOutput* out) {
  if (!any_) {
    out->ttft = t - send_;
    any_ = true;
  } else {
    out->itl.push_back(t - last_);
  }
  last_ = t;
  ++out->num_chunks;
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = p / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(values.size() - 1, lo + 1);
  return values[lo] + (values[hi] - values[lo]) * (rank - static_cast<double>(lo));
}

LatencySummary Summarize(const std::vector<double>& seconds, const std::vector<double>& percentiles) {
  LatencySummary s;
  if (!seconds.empty()) {
    const double n = static_cast<double>(seconds.size());
    const double mean = std::accumulate(seconds.begin(), seconds.end(), 0.0) / n;
    double squares = 0;
    for (double v : seconds) squares += (v - mean) * (v - mean);
    s.mean_ms = mean * 1000;
    s.std_ms = std::sqrt(squares / n) * 1000;
    s.median_ms = Percentile(seconds, 50) * 1000;
  }
  for (double p : percentiles) s.percentiles_ms.emplace_back(p, Percentile(seconds, p) * 1000);
  return s;
}

absl::StatusOr<SloConfig> ParseSlos(const std::string& text) {
  SloConfig slos;
  for (absl::string_view pair : absl::StrSplit(text, absl::ByAnyChar(", "), absl::SkipEmpty())) {
    const std::vector<absl::string_view> kv = absl::StrSplit(pair, ':');
    double ms = 0;
    if (kv.size() != 2 || !absl::SimpleAtod(kv[1], &ms) || !std::isfinite(ms)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--goodput: '", pair, "' is not NAME:MILLISECONDS (e.g. ttft:500,tpot:50,e2el:2000)"));
    }
    if (ms < 0) return absl::InvalidArgumentError(absl::StrCat("--goodput: ", kv[0], " must be >= 0 ms, got ", ms));
    if (kv[0] == "ttft") {
      slos.ttft_ms = ms;
    } else if (kv[0] == "tpot") {
      slos.tpot_ms = ms;
    } else if (kv[0] == "e2el") {
      slos.e2el_ms = ms;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--goodput: unknown metric '", kv[0], "' (ttft, tpot or e2el)"));
    }
  }
  return slos;
}

absl::StatusOr<std::vector<double>> ParsePercentiles(const std::string& text) {
  std::vector<double> out;
  for (absl::string_view part : absl::StrSplit(text, absl::ByAnyChar(", "), absl::SkipEmpty())) {
    double p = 0;
    if (!absl::SimpleAtod(part, &p) || !(p >= 0 && p <= 100)) {
      return absl::InvalidArgumentError(absl::StrCat("--percentiles: '", part, "' is not a number in [0, 100]"));
    }
    out.push_back(p);
  }
  return out;
}

std::string PercentileName(double p) {
  return std::floor(p) == p ? absl::StrCat("p", static_cast<int64_t>(p)) : absl::StrCat("p", p);
}

BenchmarkMetrics CalculateMetrics(const std::vector<RequestOutput>& outputs, double duration_s,
                                  const std::vector<double>& percentiles, const SloConfig& slos) {
  BenchmarkMetrics m;
  std::vector<double> ttfts, tpots, all_tpots, itls, e2els;
  for (const RequestOutput& o : outputs) {
    if (!o.success) {
      ++m.failed;
      ++m.errors[o.error.empty() ? "unknown error" : o.error];
      m.output_lens.push_back(0);
      continue;
    }
    ++m.completed;
    m.output_lens.push_back(o.output_tokens);
    m.total_input += o.prompt_len;
    double tpot = 0;  // one output token: 0 for goodput, left out of the TPOT figures
    if (o.output_tokens > 1) {
      tpot = (o.latency - o.ttft) / static_cast<double>(o.output_tokens - 1);
      tpots.push_back(tpot);
    }
    all_tpots.push_back(tpot);
    itls.insert(itls.end(), o.itl.begin(), o.itl.end());
    ttfts.push_back(o.ttft);
    e2els.push_back(o.latency);
  }
  m.total_output = std::accumulate(m.output_lens.begin(), m.output_lens.end(), int64_t{0});

  if (slos.any()) {
    for (size_t i = 0; i < ttfts.size(); ++i) {
      const bool good = (!slos.ttft_ms || ttfts[i] <= *slos.ttft_ms / 1000) &&
                        (!slos.tpot_ms || all_tpots[i] <= *slos.tpot_ms / 1000) &&
                        (!slos.e2el_ms || e2els[i] <= *slos.e2el_ms / 1000);
      m.good_completed += good;
    }
    m.request_goodput = static_cast<double>(m.good_completed) / duration_s;
  }
  m.request_throughput = static_cast<double>(m.completed) / duration_s;
  m.output_throughput = static_cast<double>(m.total_output) / duration_s;
  m.total_token_throughput = static_cast<double>(m.total_input + m.total_output) / duration_s;
  m.ttft = Summarize(ttfts, percentiles);
  m.tpot = Summarize(tpots, percentiles);
  m.itl = Summarize(itls, percentiles);
  m.e2el = Summarize(e2els, percentiles);

  // Peak output rate: chunks per whole second since the first send, and the most requests in
  // flight at once over half-open intervals [start, start + latency).
  if (m.completed > 0) {
    double min_start = 1e300, max_end = -1e300;
    for (const RequestOutput& o : outputs) {
      if (!o.success) continue;
      min_start = std::min(min_start, o.start_time);
      max_end = std::max(max_end, o.start_time + o.latency);
    }
    const int64_t num_buckets = static_cast<int64_t>(std::ceil(max_end - min_start)) + 1;
    std::vector<double> per_second(static_cast<size_t>(num_buckets), 0.0);
    std::vector<std::pair<double, int>> events;
    for (const RequestOutput& o : outputs) {
      if (!o.success) continue;
      double t = o.start_time + o.ttft;
      auto count = [&](double when) {
        const int64_t bucket = static_cast<int64_t>(when - min_start);
        if (bucket >= 0 && bucket < num_buckets) per_second[static_cast<size_t>(bucket)] += 1;
      };
      count(t);
      for (double gap : o.itl) count(t += gap);
      events.emplace_back(o.start_time, +1);
      events.emplace_back(o.start_time + o.latency, -1);
    }
    m.max_output_tokens_per_s = *std::max_element(per_second.begin(), per_second.end());
    std::sort(events.begin(), events.end());  // at equal times, -1 (a departure) sorts first
    int64_t now = 0;
    for (const auto& [t, delta] : events) m.max_concurrent_requests = std::max(m.max_concurrent_requests, now += delta);
  }
  return m;
}

}  // namespace nsa::bench
