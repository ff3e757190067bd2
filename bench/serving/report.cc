#include "bench/serving/report.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace nsa::bench {

using nlohmann::json;

namespace {

struct Figure {
  const char* key;     // ttft
  const char* name;    // TTFT
  const char* header;  // Time to First Token
};
constexpr Figure kFigures[] = {{"ttft", "TTFT", "Time to First Token"},
                               {"tpot", "TPOT", "Time per Output Token (excl. 1st token)"},
                               {"itl", "ITL", "Inter-token Latency"},
                               {"e2el", "E2EL", "End-to-end Latency"}};

void AddSummary(const char* key, const LatencySummary& s, json* out) {
  (*out)[absl::StrCat("mean_", key, "_ms")] = s.mean_ms;
  (*out)[absl::StrCat("median_", key, "_ms")] = s.median_ms;
  (*out)[absl::StrCat("std_", key, "_ms")] = s.std_ms;
  for (const auto& [p, v] : s.percentiles_ms) (*out)[absl::StrCat(PercentileName(p), "_", key, "_ms")] = v;
}

// "=====  Title  =====" and "-----Title-----" centred in 50 columns, as vLLM prints them.
std::string Centered(const std::string& title, char fill) {
  const int pad = std::max(0, 50 - static_cast<int>(title.size()));
  return std::string(pad / 2, fill) + title + std::string(pad - pad / 2, fill) + "\n";
}

std::string Line(const std::string& label, const json& v) {
  std::string value;
  if (v.is_number_integer()) {
    value = absl::StrCat(v.get<int64_t>());
  } else if (v.is_number()) {
    value = absl::StrFormat("%.2f", v.get<double>());
  } else if (v.is_string()) {
    value = v.get<std::string>();
  } else {
    value = v.dump(-1, ' ', false, json::error_handler_t::replace);
  }
  return absl::StrFormat("%-40s %-10s\n", label, value);
}

}  // namespace

json MetricsJson(const BenchmarkMetrics& m, const std::vector<RequestOutput>& outputs, double duration_s) {
  json r;
  r["duration"] = duration_s;
  r["completed"] = m.completed;
  r["failed"] = m.failed;
  r["total_input_tokens"] = m.total_input;
  r["total_output_tokens"] = m.total_output;
  r["request_throughput"] = m.request_throughput;
  r["request_goodput"] = m.request_goodput ? json(*m.request_goodput) : json(nullptr);
  r["output_throughput"] = m.output_throughput;
  r["total_token_throughput"] = m.total_token_throughput;
  r["max_output_tokens_per_s"] = m.max_output_tokens_per_s;
  r["max_concurrent_requests"] = m.max_concurrent_requests;
  AddSummary("ttft", m.ttft, &r);
  AddSummary("tpot", m.tpot, &r);
  AddSummary("itl", m.itl, &r);
  AddSummary("e2el", m.e2el, &r);
  json input_lens = json::array(), ttfts = json::array(), itls = json::array(), latencies = json::array(),
       starts = json::array(), queues = json::array(), errors = json::array();
  for (const RequestOutput& o : outputs) {
    input_lens.push_back(o.prompt_len);
    ttfts.push_back(o.ttft);
    itls.push_back(o.itl);
    latencies.push_back(o.latency);
    starts.push_back(o.start_time);
    queues.push_back(o.queue_time);
    errors.push_back(o.error);
  }
  r["input_lens"] = input_lens;
  r["output_lens"] = m.output_lens;
  r["ttfts"] = ttfts;
  r["itls"] = itls;
  r["latencies"] = latencies;
  r["start_times"] = starts;
  r["queue_times"] = queues;
  r["errors"] = errors;
  r["error_summary"] = m.errors;
  return r;
}

std::string FormatTable(const json& result) {
  json r = result;  // a copy: operator[] reads a missing key as null instead of failing
  std::string s = Centered(" Serving Benchmark Result ", '=');
  s += Line("Backend:", r["backend"]);
  s += Line("Successful requests:", r["completed"]);
  s += Line("Failed requests:", r["failed"]);
  if (!r["max_concurrency"].is_null()) s += Line("Maximum request concurrency:", r["max_concurrency"]);
  if (r["request_rate"].is_number()) s += Line("Request rate configured (RPS):", r["request_rate"]);
  s += Line("Benchmark duration (s):", r["duration"]);
  s += Line("Total input tokens:", r["total_input_tokens"]);
  s += Line("Total generated tokens:", r["total_output_tokens"]);
  s += Line("Request throughput (req/s):", r["request_throughput"]);
  if (!r["request_goodput"].is_null()) s += Line("Request goodput (req/s):", r["request_goodput"]);
  s += Line("Output token throughput (tok/s):", r["output_throughput"]);
  s += Line("Peak output token throughput (tok/s):", r["max_output_tokens_per_s"]);
  s += Line("Peak concurrent requests:", r["max_concurrent_requests"]);
  s += Line("Total Token throughput (tok/s):", r["total_token_throughput"]);
  for (const Figure& f : kFigures) {
    s += Centered(f.header, '-');
    s += Line(absl::StrCat("Mean ", f.name, " (ms):"), r[absl::StrCat("mean_", f.key, "_ms")]);
    s += Line(absl::StrCat("Median ", f.name, " (ms):"), r[absl::StrCat("median_", f.key, "_ms")]);
    for (const json& p : r["percentiles"]) {
      const std::string name = PercentileName(p.get<double>());
      s += Line(absl::StrCat("P", name.substr(1), " ", f.name, " (ms):"), r[absl::StrCat(name, "_", f.key, "_ms")]);
    }
  }
  if (r.contains("server_metrics")) {
    json& sm = r["server_metrics"];
    s += Centered("Server metrics: server / client", '-');
    s += Line("Prompt tokens (prefill + cached):",
              absl::StrCat(sm["server"]["prompt_tokens"].get<double>(), " / ", sm["client"]["prompt_tokens"].get<int64_t>()));
    s += Line("Generation tokens:", absl::StrCat(sm["server"]["generation_tokens"].get<double>(), " / ",
                                                 sm["client"]["generation_tokens"].get<int64_t>()));
    s += Line("Requests finished:", absl::StrCat(sm["server"]["requests_finished"].get<double>(), " / ",
                                                 sm["client"]["requests"].get<int64_t>()));
    s += Line("Preemptions:", sm["server"]["preemptions"]);
    if (sm["server"].contains("mean_engine_step_ms") && sm["server"]["engine_steps"].get<double>() > 0) {
      s += Line("Engine steps (server):", sm["server"]["engine_steps"]);
      s += Line("Mean engine step (ms, server):", sm["server"]["mean_engine_step_ms"]);
    }
    s += Line("Counts agree (warm-ups included):", sm["match"].get<bool>() ? "yes" : "NO");
  }
  if (!r["error_summary"].empty()) {
    s += Centered("Errors (count: message)", '-');
    for (const auto& [message, count] : r["error_summary"].items()) s += absl::StrCat(count.get<int64_t>(), ": ", message, "\n");
  }
  s += std::string(50, '=') + "\n";
  return s;
}

std::string TableHeader() {
  std::string h = "# label rate num_prompts completed failed duration_s request_throughput output_throughput "
                  "total_token_throughput goodput";
  for (const Figure& f : kFigures) absl::StrAppend(&h, " ", f.key, "_mean ", f.key, "_p50 ", f.key, "_p90 ", f.key, "_p99");
  return h + "\n";
}

std::string TableRow(const std::string& label, double rate, const BenchmarkMetrics& m, double duration_s) {
  const std::string rate_text = std::isinf(rate) ? "inf" : absl::StrFormat("%.6g", rate);
  std::string row = absl::StrFormat("%s %s %d %d %d %.4f %.4f %.4f %.4f %s", label, rate_text, m.completed + m.failed,
                                    m.completed, m.failed, duration_s, m.request_throughput, m.output_throughput,
                                    m.total_token_throughput,
                                    m.request_goodput ? absl::StrFormat("%.4f", *m.request_goodput) : std::string("nan"));
  for (const LatencySummary* s : {&m.ttft, &m.tpot, &m.itl, &m.e2el}) {
    double p90 = 0, p99 = 0;
    for (const auto& [p, v] : s->percentiles_ms) {
      if (p == 90) p90 = v;
      if (p == 99) p99 = v;
    }
    absl::StrAppendFormat(&row, " %.4f %.4f %.4f %.4f", s->mean_ms, s->median_ms, p90, p99);
  }
  return row + "\n";
}

}  // namespace nsa::bench
