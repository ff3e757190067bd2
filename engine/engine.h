// The engine: a thread-safe front (Submit, Abort, GetLoad) over one engine loop that owns the
// scheduler, the KV cache manager and the model runner.
//
//   client threads                      engine thread (Loop)
//   Submit(request) --validate--> inbox --> admit --> Schedule --> runner.Execute --> sample
//        <-- RequestHandle <-- Delta / Final events <-- stop checks <-- detokenize <--'
//
// Every handle receives exactly one Final per completion. Dropping a handle, or Abort, cancels
// the request at the next step boundary and frees its pages. Admission limits (waiting requests,
// queued prompt tokens) refuse with RESOURCE_EXHAUSTED instead of growing without bound.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/kv_cache/kv_cache_manager.h"
#include "engine/request.h"
#include "engine/runner/model_runner.h"
#include "engine/scheduler/scheduler.h"
#include "models/tokenizer.h"

namespace nsa {

struct EngineOptions {
  SchedulerOptions scheduler;
  bool prefix_caching = true;
  int max_model_len = 0;  // 0: the model's max_position_embeddings, capped by the KV pool
  int max_waiting_requests = 1024;
  int64_t max_queued_prompt_tokens = int64_t{1} << 22;
  int max_n = 16;
  int max_logprobs = 20;
  int max_stop_strings = 16;
  uint64_t seed = 0;  // seeds of unseeded requests come from this (0: from the OS)
  std::string model_name = "nsa";
};

// What one engine step did, for metrics (called on the engine thread).
struct StepStats {
  std::chrono::nanoseconds duration{0};
  int64_t batched_tokens = 0;
  int64_t prompt_tokens = 0;  // of batched_tokens, those that were prompt (prefill)
  int64_t generated_tokens = 0;
  int num_preempted = 0;
  Load load;
  int64_t prefix_queries = 0, prefix_hits = 0;  // cumulative, tokens
  // NSA's own: selection blocks the step's queries read (per layer and KV head), summaries
  // held by running sequences (per layer and KV head), and the page pool.
  int64_t selected_blocks = 0;
  int64_t summary_entries = 0;
  int64_t pages_used = 0, pages_cached = 0, pages_free = 0;
};

class EngineObserver {
 public:
  virtual ~EngineObserver() = default;
  virtual void OnStep(const StepStats& stats) {}
  // A completion produced a token at `when`; `previous` is its last token's time (none for the
  // first), for inter-token latency.
  virtual void OnToken(Clock::time_point when, std::optional<Clock::time_point> previous) {}
  virtual void OnFinished(const Final& final) {}
  virtual void OnRejected(const std::string& reason) {}
};

struct RequestState;

class RequestHandle {
 public:
  explicit RequestHandle(std::shared_ptr<RequestState> state);
  ~RequestHandle();  // cancels the request unless it is finished
  RequestHandle(const RequestHandle&) = delete;
  RequestHandle& operator=(const RequestHandle&) = delete;

  // Blocks for the next event; nullopt once every completion's Final has been returned.
  std::optional<Event> Next();
  // Like Next, waiting at most `timeout`; false on time-out (then *event is untouched).
  bool NextFor(Clock::duration timeout, std::optional<Event>* event);
  void Abort();
  const std::string& request_id() const;
  int64_t prompt_tokens() const;

 private:
  std::shared_ptr<RequestState> state_;
};

class Engine {
 public:
  // Starts the engine loop. Fails when one sequence of max_model_len does not fit in the pool.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options, std::unique_ptr<ModelRunner> runner,
                                                        std::unique_ptr<Tokenizer> tokenizer);
  ~Engine();  // stops the loop; unfinished requests end with kError

  // INVALID_ARGUMENT for a request that can never run (message says why), RESOURCE_EXHAUSTED
  // when the queue is full, UNAVAILABLE while draining.
  absl::StatusOr<std::unique_ptr<RequestHandle>> Submit(Request request);
  // Cancels by id; false if no such request is live.
  bool Abort(const std::string& request_id);
  Load GetLoad() const;

  // Stops admitting (Submit answers UNAVAILABLE) and waits up to `timeout` for in-flight
  // requests; true when all finished.
  bool Drain(Clock::duration timeout);
  bool draining() const;
  // Time of the loop's last iteration (liveness: recent, or idle with nothing to do).
  Clock::time_point last_progress() const { return Clock::time_point(Clock::duration(last_progress_.load())); }
  bool idle() const;

  void SetObserver(EngineObserver* observer) { observer_ = observer; }  // before the first Submit
  // A front end refused a request before it reached Submit (counted with the engine's own).
  void ReportRejected(const std::string& reason) {
    if (observer_) observer_->OnRejected(reason);
  }
  const ModelConfig& config() const { return runner_->config(); }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const EngineOptions& options() const { return options_; }
  int max_model_len() const { return max_model_len_; }
  std::string DescribeBackend() const { return runner_->Describe(); }
  int64_t num_kv_pages() const { return cache_->pool().num_pages(); }
  // For tests: aborts on inconsistent page accounting. Only while the engine is idle.
  void CheckInvariants() const;

 private:
  Engine(const EngineOptions& options, std::unique_ptr<ModelRunner> runner, std::unique_ptr<Tokenizer> tokenizer,
         int max_model_len);
  absl::Status Validate(Request& request) const;
  void Loop();
  void Admit(Request request, std::shared_ptr<RequestState> state);
  void Step();
  void Sample(Sequence* seq, std::span<const float> logits);
  // n > 1: the first sample forks the other completions off the prompt's pages; returns them
  // (they sample from the same logits, before `seq`).
  std::vector<Sequence*> ForkCompletions(Sequence* seq);
  std::vector<int> BannedIds(const Sequence* seq) const;
  // The step's draws on the runner's device: parents and the completions they fork.
  void SampleOnDevice(const std::vector<Sequence*>& samplers);
  void AppendToken(Sequence* seq, const SampleResult& result);
  void Finish(Sequence* seq, FinishReason reason, std::string matched = "", std::string error = "");
  void Flush(Sequence* seq);
  // Updates the load snapshot, then hands the step's events to their requests.
  void Publish();
  uint64_t SeedFor(const Request& request, int index);

  EngineOptions options_;
  std::unique_ptr<ModelRunner> runner_;
  std::unique_ptr<Tokenizer> tokenizer_;
  int max_model_len_;
  std::unique_ptr<KvCacheManager> cache_;
  std::unique_ptr<Scheduler> scheduler_;
  EngineObserver* observer_ = nullptr;

  // Shared with client threads.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<Request, std::shared_ptr<RequestState>>> inbox_;
  absl::flat_hash_map<std::string, std::weak_ptr<RequestState>> live_;  // by request id
  bool stop_ = false;
  bool draining_ = false;
  bool poke_ = false;
  Load load_;
  int64_t inbox_prompt_tokens_ = 0;
  uint64_t next_request_number_ = 0;
  std::atomic<int64_t> last_progress_{0};

  // Engine thread only.
  absl::flat_hash_map<SeqId, std::unique_ptr<Sequence>> seqs_;
  std::vector<std::pair<std::shared_ptr<RequestState>, Event>> outbox_;
  SeqId next_seq_id_ = 0;
  int64_t arrivals_ = 0;
  std::mt19937_64 seed_source_;
  std::thread thread_;
};

}  // namespace nsa
