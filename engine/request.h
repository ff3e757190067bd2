// What a client asks the engine for, and what it gets back: plain structs shared by the engine,
// the gRPC server and the HTTP gateway (which convert their wire formats to and from these).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "engine/sampler/sampler.h"

namespace nsa {

using Clock = std::chrono::steady_clock;

struct StopParams {
  std::optional<int> max_tokens;  // absent: up to the model's context
  int min_tokens = 0;  // EOS, stop ids and stop strings are ignored before this many
  std::vector<std::string> stop;  // matched on the output text, across token boundaries
  std::vector<int> stop_token_ids;
  bool ignore_eos = false;
  bool include_stop_in_output = false;
};

struct Request {
  std::string request_id;  // echoed; the engine makes one when empty
  // Exactly one of text or tokens: text is tokenized with a BOS (unless add_bos is false).
  std::optional<std::string> text;
  std::vector<int> tokens;
  bool add_bos = true;
  SamplingParams sampling;
  bool has_seed = false;  // without a seed, the engine draws one
  StopParams stop;
  int n = 1;  // independent completions sharing the prompt's pages
  int logprobs = -1;  // >= 0: logprob of each token and this many alternatives
  bool skip_special_tokens = true;
  int priority = 0;  // lower runs first; ties in arrival order
  std::optional<Clock::time_point> deadline;
};

enum class FinishReason { kEos, kStopSequence, kStopToken, kLength, kCancelled, kTimeLimit, kError };
const char* FinishReasonName(FinishReason reason);  // "eos", "stop", "stop_token", "length", ...

struct TokenLogprobs {
  int token;
  float logprob;
  std::vector<Logprob> top;
};

// New output of one completion since its last delta.
struct Delta {
  int index = 0;  // which of the n completions
  std::vector<int> token_ids;
  std::string text;  // may be empty while a UTF-8 sequence or a possible stop string is pending
  std::vector<TokenLogprobs> logprobs;
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens served from the prefix cache
};

struct Timings {
  Clock::time_point arrival, scheduled, first_token, done;
  bool scheduled_set = false, first_token_set = false;
};

// The last message of one completion.
struct Final {
  int index = 0;
  FinishReason reason = FinishReason::kLength;
  std::string matched_stop;  // the stop string or stop token id that ended it
  std::string error;  // kError: what went wrong
  bool before_start = false;  // kTimeLimit or kCancelled before any token was scheduled
  Usage usage;
  Timings timings;
  int num_preemptions = 0;
};

using Event = std::variant<Delta, Final>;

// What a router needs: how busy the engine is.
struct Load {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t queued_prompt_tokens = 0;
  double kv_cache_usage = 0;
};

}  // namespace nsa
