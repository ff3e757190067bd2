// The figures of a serving benchmark, defined as `vllm bench serve` defines them
// (vllm/benchmarks/serve.py, calculate_metrics), so numbers compare one for one:
//
//   send        first chunk      chunk      chunk      last chunk
//    |-- TTFT --|--- ITL ---|--- ITL ---|--- ITL ---|
//    |<------------------------ E2EL --------------->|
//   TPOT = (E2EL - TTFT) / (output_tokens - 1), per request with more than one output token
//
// A "chunk" is one streamed message that belongs to the completion: an SSE event with non-empty
// `choices` (the finish chunk included, the usage-only chunk not), or a gRPC Delta or Final.
// ITLs of all requests are pooled; TTFT, TPOT and E2EL are one value per successful request.
// Percentiles interpolate linearly between order statistics (numpy's default); an empty sample
// reports 0 for every figure, as numpy does for `np.mean(x or 0)`.
//
// Plain data and pure functions: no clock, no I/O, so synthetic traces test them exactly.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace nsa::bench {

// One request as the client saw it. Times are in seconds; start_time counts from the start of
// the benchmark, the others from start_time.
struct RequestOutput {
  bool success = false;
  std::string error;           // why it failed (empty on success)
  double start_time = 0;       // when the request was sent
  double queue_time = 0;       // waited for a --max-concurrency slot before being sent
  double ttft = 0;             // first chunk - send
  std::vector<double> itl;     // gaps between consecutive chunks
  double latency = 0;          // last chunk - send (E2EL)
  int64_t prompt_len = 0;      // as the server counted it (usage), else as sent
  int64_t output_tokens = 0;   // as the server counted it (usage)
  int64_t num_chunks = 0;
};

// Turns chunk arrival times into ttft, itl and latency; the clients use it so the definition
// lives in one place. Times are seconds on any one clock.
class ChunkTimer {
 public:
  explicit ChunkTimer(double send_time) : send_(send_time), last_(send_time) {}
  void OnChunk(double t, RequestOutput* out);
  // Sets out->latency to the last chunk (or 0 when none came).
  void Finish(RequestOutput* out) const { out->latency = last_ - send_; }
  bool any() const { return any_; }

 private:
  double send_;
  double last_;
  bool any_ = false;
};

// numpy.percentile(values, p) with the default linear method; 0 for an empty sample.
double Percentile(std::vector<double> values, double p);

// mean, median, std (population, as np.std) and the asked percentiles, in milliseconds.
struct LatencySummary {
  double mean_ms = 0, median_ms = 0, std_ms = 0;
  std::vector<std::pair<double, double>> percentiles_ms;  // (p, value)
};
LatencySummary Summarize(const std::vector<double>& seconds, const std::vector<double>& percentiles);

// Service-level objectives for goodput, in milliseconds; a request is good when it meets every
// one that is set (value <= SLO). `tpot` of a request with one output token counts as 0.
struct SloConfig {
  std::optional<double> ttft_ms, tpot_ms, e2el_ms;
  bool any() const { return ttft_ms || tpot_ms || e2el_ms; }
};
// "ttft:500,tpot:50" (commas or spaces between pairs); errors name the bad pair.
absl::StatusOr<SloConfig> ParseSlos(const std::string& text);
// "50,90,99": each in [0, 100].
absl::StatusOr<std::vector<double>> ParsePercentiles(const std::string& text);
// "p99", "p99.9": the key suffix vLLM uses in its JSON.
std::string PercentileName(double p);

struct BenchmarkMetrics {
  int64_t completed = 0;
  int64_t failed = 0;
  int64_t total_input = 0;
  int64_t total_output = 0;
  double request_throughput = 0;                 // completed / duration
  std::optional<double> request_goodput;         // good / duration, when SLOs are set
  int64_t good_completed = 0;
  double output_throughput = 0;                  // total_output / duration
  double total_token_throughput = 0;             // (total_input + total_output) / duration
  LatencySummary ttft, tpot, itl, e2el;
  double max_output_tokens_per_s = 0;            // busiest one-second bucket of chunks
  int64_t max_concurrent_requests = 0;           // most requests in flight at once
  std::vector<int64_t> output_lens;              // per request; 0 for a failed one
  std::map<std::string, int64_t> errors;         // failure message -> count
};

BenchmarkMetrics CalculateMetrics(const std::vector<RequestOutput>& outputs, double duration_s,
                                  const std::vector<double>& percentiles, const SloConfig& slos);

}  // namespace nsa::bench
