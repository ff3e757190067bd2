// One completion as the engine tracks it: its tokens, how many of them have K/V in the cache,
// its place in the queue, and its output state. The engine owns every Sequence; the scheduler
// works on pointers to them.
//
//   tokens   |<------- prompt ------->|<---- generated ---->|
//            |<--- num_computed --->|   to compute this step   (prefill chunk, or 1 when decoding)
//
// A sequence samples when a step leaves num_computed == tokens.size(). Preemption frees its
// pages and sets num_computed to 0; readmission recomputes (prefix hits make that cheap), and
// the sampler's generator carries on where it was, so the tokens are those of an
// uninterrupted run.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/kv_cache/kv_cache_manager.h"
#include "engine/output/detokenizer.h"
#include "engine/output/stop_checker.h"
#include "engine/request.h"
#include "engine/sampler/sampler.h"

namespace nsa {

struct RequestState;  // engine.cc: the client's side of a request

struct Sequence {
  SeqId id = 0;
  int index = 0;  // which of the request's n completions
  std::shared_ptr<RequestState> request;
  std::shared_ptr<const Request> params;  // shared by the request's completions
  int n = 1;  // the request's completions: admission reserves room in the batch for all
  bool forked = false;  // n > 1: the other completions have been forked off this one

  std::vector<int> tokens;
  int64_t num_prompt = 0;
  int64_t num_computed = 0;
  int64_t max_total_tokens = 0;  // prompt + max_tokens, capped by the model's context

  // Scheduling.
  int priority = 0;
  int64_t arrival = 0;  // submission order
  bool running = false;
  bool ever_scheduled = false;
  int num_preemptions = 0;
  int64_t cached_tokens = 0;  // prefix hit at first admission

  // Output.
  Sampler sampler{0};
  TokenHistory history;
  std::unique_ptr<IncrementalDetokenizer> detokenizer;
  std::unique_ptr<StopChecker> stop_checker;
  Delta pending;  // accumulated this step, sent at its end
  Timings timings;
  Clock::time_point last_token_time;

  int64_t num_output() const { return static_cast<int64_t>(tokens.size()) - num_prompt; }
  int64_t num_to_compute() const { return static_cast<int64_t>(tokens.size()) - num_computed; }
};

}  // namespace nsa
