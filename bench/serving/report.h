// A run's result as JSON (vLLM's field names, so its tools read it, plus this generator's own)
// and as the printed table, which is drawn from the JSON so the two never disagree.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/serving/serving_metrics.h"

namespace nsa::bench {

// The figures and the per-request arrays: duration, completed, failed, total_input_tokens,
// total_output_tokens, request_throughput, request_goodput, output_throughput,
// total_token_throughput, max_output_tokens_per_s, max_concurrent_requests,
// {mean,median,std,pNN}_{ttft,tpot,itl,e2el}_ms, input_lens, output_lens, ttfts, itls,
// latencies, start_times, queue_times, errors, error_summary.
nlohmann::json MetricsJson(const BenchmarkMetrics& m, const std::vector<RequestOutput>& outputs, double duration_s);

// vLLM's table layout; the server-metrics and error sections when the result has them.
std::string FormatTable(const nlohmann::json& result);

// One whitespace-separated row per run for plotting (bench/serving/sweep.sh), and its header:
// label, configured rate ("inf" or req/s), counts, duration, throughputs, goodput ("nan"
// without SLOs), and the mean, median, p90 and p99 (ms) of TTFT, TPOT, ITL and E2EL. m must have
// been computed with percentiles {90, 99}.
std::string TableHeader();
std::string TableRow(const std::string& label, double rate, const BenchmarkMetrics& m, double duration_s);

}  // namespace nsa::bench
