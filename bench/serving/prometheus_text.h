// Reads a server's Prometheus /metrics page, so a run can set the server's own counters
// (vllm:prompt_tokens_total, vllm:generation_tokens_total, ...) beside the client's counts.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace nsa::bench {

// Sample name -> the sum of its values over every label set ("# " lines are skipped).
// vllm:request_success_total{finished_reason="length",...} 3 and {finished_reason="stop",...} 1
// give vllm:request_success_total = 4.
using MetricSums = std::map<std::string, double>;
absl::StatusOr<MetricSums> ParsePrometheusText(const std::string& text);

// GET url ("http://host:port/metrics", or "host:port" for /metrics there) and parse it.
absl::StatusOr<MetricSums> ScrapeMetrics(const std::string& url);

}  // namespace nsa::bench
