// Sends prompts at their scheduled offsets, each on its own thread for as long as it is in
// flight (threads are reused once their request ends), with at most max_concurrency in flight.
//
// Under a cap, a request whose time has come waits for a free slot, in arrival order, and the
// ones after it keep their own times: a request starts at max(its arrival, a slot frees), as
// vLLM's semaphore does. The wait is reported as queue_time.
#pragma once

#include <vector>

#include "bench/serving/api_client.h"

namespace nsa::bench {

struct RunResult {
  std::vector<RequestOutput> outputs;  // in prompt order
  double duration_s = 0;               // first scheduled send to the last request's end
};

// offsets: seconds from the start, one per prompt, non-decreasing. max_concurrency 0: no cap.
RunResult RunRequests(ApiClient& client, const std::vector<Prompt>& prompts, const std::vector<double>& offsets,
                      int max_concurrency);

}  // namespace nsa::bench
