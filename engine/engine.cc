#include "engine/engine.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/common/check.h"
#include "kernels/common/status.h"

namespace nsa {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos: return "eos";
    case FinishReason::kStopSequence: return "stop";
    case FinishReason::kStopToken: return "stop_token";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kTimeLimit: return "time_limit";
    case FinishReason::kError: return "error";
  }
  return "?";
}

// The client's side of a request: events in arrival order, and the cancel flag.
struct RequestState {
  std::string request_id;
  int n = 1;
  int64_t prompt_tokens = 0;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Event> events;
  int finals_pending;  // finals not yet queued
  int finals_unread;  // finals not yet returned by Next
  std::atomic<bool> cancelled{false};
  // Wakes the engine loop on cancel; empty once the engine is gone.
  std::function<void()> wake;
  std::mutex wake_mu;

  void Push(Event e) {
    std::lock_guard<std::mutex> lock(mu);
    if (std::holds_alternative<Final>(e)) --finals_pending;
    events.push_back(std::move(e));
    cv.notify_all();
  }
};

// ---- RequestHandle --------------------------------------------------------------------------

RequestHandle::RequestHandle(std::shared_ptr<RequestState> state) : state_(std::move(state)) {}

RequestHandle::~RequestHandle() { Abort(); }

std::optional<Event> RequestHandle::Next() {
  std::optional<Event> e;
  NextFor(Clock::duration::max(), &e);
  return e;
}

bool RequestHandle::NextFor(Clock::duration timeout, std::optional<Event>* event) {
  std::unique_lock<std::mutex> lock(state_->mu);
  auto ready = [&] { return !state_->events.empty() || state_->finals_unread == 0; };
  if (timeout == Clock::duration::max()) {
    state_->cv.wait(lock, ready);
  } else if (!state_->cv.wait_for(lock, timeout, ready)) {
    return false;
  }
  if (state_->events.empty()) {
    *event = std::nullopt;
    return true;
  }
  *event = std::move(state_->events.front());
  state_->events.pop_front();
  if (std::holds_alternative<Final>(**event)) --state_->finals_unread;
  return true;
}

void RequestHandle::Abort() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->finals_pending == 0) return;
  }
  state_->cancelled = true;
  std::lock_guard<std::mutex> lock(state_->wake_mu);
  if (state_->wake) state_->wake();
}

const std::string& RequestHandle::request_id() const { return state_->request_id; }
int64_t RequestHandle::prompt_tokens() const { return state_->prompt_tokens; }

// ---- Engine ---------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options, std::unique_ptr<ModelRunner> runner,
                                                       std::unique_ptr<Tokenizer> tokenizer) {
  const ModelConfig& c = runner->config();
  if (tokenizer->vocab_size() > c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("the tokenizer has ", tokenizer->vocab_size(),
                                                   " pieces, more than the model's vocab_size ", c.vocab_size));
  }
  const int64_t pages_per_kind = 1 + (c.nsa.kv_sharing == KvSharing::kPerBranch) +
                                 (c.nsa.kv_sharing == KvSharing::kPerBranch || c.nsa.compress_fn == CompressFn::kLinear);
  // Rings hold a few pages; size the bound for a whole context of every kind to stay simple.
  const int64_t capacity = runner->num_pages() / pages_per_kind * c.nsa.select_block;
  int64_t max_len = options.max_model_len > 0 ? options.max_model_len : c.max_position_embeddings;
  if (options.max_model_len > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("max_model_len ", options.max_model_len, " exceeds the model's ",
                                                   c.max_position_embeddings, " positions"));
  }
  if (max_len > capacity) {
    if (options.max_model_len > 0) {
      return absl::ResourceExhaustedError(absl::StrCat("the KV cache holds ", capacity, " tokens (", runner->num_pages(),
                                                       " pages), less than max_model_len ", max_len,
                                                       "; give the cache more memory or lower max_model_len"));
    }
    max_len = capacity;
  }
  if (max_len < c.nsa.select_block) {
    return absl::ResourceExhaustedError(absl::StrCat("the KV cache holds only ", capacity, " tokens"));
  }
  if (options.scheduler.max_num_seqs < 1 || options.scheduler.max_num_batched_tokens < 1) {
    return absl::InvalidArgumentError("max_num_seqs and max_num_batched_tokens must be positive");
  }
  return std::unique_ptr<Engine>(new Engine(options, std::move(runner), std::move(tokenizer), static_cast<int>(max_len)));
}

Engine::Engine(const EngineOptions& options, std::unique_ptr<ModelRunner> runner, std::unique_ptr<Tokenizer> tokenizer,
               int max_model_len)
    : options_(options),
      runner_(std::move(runner)),
      tokenizer_(std::move(tokenizer)),
      max_model_len_(max_model_len),
      seed_source_(options.seed != 0 ? options.seed : std::random_device{}()) {
  KvCacheManager::Options cache;
  cache.num_pages = runner_->num_pages();
  cache.nsa = runner_->config().nsa;
  cache.prefix_caching = options.prefix_caching;
  // Pages of different models (or configs) never match.
  cache.model_key = runner_->config().Fingerprint() ^ std::hash<std::string>{}(options.model_name);
  cache_ = std::make_unique<KvCacheManager>(cache);
  scheduler_ = std::make_unique<Scheduler>(options.scheduler, cache_.get());
  last_progress_ = Clock::now().time_since_epoch().count();
  thread_ = std::thread([this] { Loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

absl::Status Engine::Validate(Request& r) const {
  const ModelConfig& c = config();
  auto bad = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (r.text.has_value() && !r.tokens.empty()) return bad("give the prompt as text or as token ids, not both");
  if (r.text.has_value() && r.text->empty()) return bad("the prompt is empty");
  if (r.text.has_value()) r.tokens = tokenizer_->Encode(*r.text, r.add_bos);
  if (r.tokens.empty()) return bad("the prompt is empty");
  for (int t : r.tokens) {
    if (t < 0 || t >= c.vocab_size) return bad("prompt token id ", t, " is outside the vocabulary [0, ", c.vocab_size, ")");
  }
  RETURN_IF_ERROR(r.sampling.Validate(c.vocab_size));
  if (r.n < 1 || r.n > options_.max_n) return bad("n must be in [1, ", options_.max_n, "], got ", r.n);
  if (r.n > options_.scheduler.max_num_seqs) return bad("n (", r.n, ") exceeds max_num_seqs (", options_.scheduler.max_num_seqs, ")");
  if (r.logprobs < -1 || r.logprobs > options_.max_logprobs) {
    return bad("logprobs must be in [0, ", options_.max_logprobs, "], got ", r.logprobs);
  }
  const StopParams& s = r.stop;
  if (s.max_tokens.has_value() && *s.max_tokens < 1) return bad("max_tokens must be >= 1, got ", *s.max_tokens);
  if (s.min_tokens < 0) return bad("min_tokens must be >= 0, got ", s.min_tokens);
  if (s.max_tokens.has_value() && s.min_tokens > *s.max_tokens) {
    return bad("min_tokens (", s.min_tokens, ") must not exceed max_tokens (", *s.max_tokens, ")");
  }
  if (static_cast<int>(s.stop.size()) > options_.max_stop_strings) {
    return bad("at most ", options_.max_stop_strings, " stop strings, got ", s.stop.size());
  }
  for (const std::string& stop : s.stop) {
    if (stop.empty()) return bad("stop strings must not be empty");
  }
  for (int t : s.stop_token_ids) {
    if (t < 0 || t >= c.vocab_size) return bad("stop token id ", t, " is outside the vocabulary [0, ", c.vocab_size, ")");
  }
  const int64_t prompt = static_cast<int64_t>(r.tokens.size());
  const int64_t completion = s.max_tokens.value_or(1);
  if (prompt + completion > max_model_len_) {
    // The sentence OpenAI clients and vLLM users recognise.
    return bad("This model's maximum context length is ", max_model_len_, " tokens. However, you requested ",
               prompt + completion, " tokens (", prompt, " in the messages, ", completion,
               " in the completion). Please reduce the length of the messages or completion.");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<RequestHandle>> Engine::Submit(Request request) {
  absl::Status valid = Validate(request);
  if (!valid.ok()) {
    if (observer_) observer_->OnRejected("invalid");
    return valid;
  }
  auto state = std::make_shared<RequestState>();
  state->n = request.n;
  state->prompt_tokens = static_cast<int64_t>(request.tokens.size());
  state->finals_pending = state->finals_unread = request.n;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_ || stop_) {
      if (observer_) observer_->OnRejected("draining");
      return absl::UnavailableError("the server is shutting down and admits no new requests");
    }
    if (load_.waiting + static_cast<int64_t>(inbox_.size()) >= options_.max_waiting_requests) {
      if (observer_) observer_->OnRejected("queue_full");
      return absl::ResourceExhaustedError(absl::StrCat("too many waiting requests (", options_.max_waiting_requests,
                                                       "); retry later"));
    }
    if (load_.queued_prompt_tokens + inbox_prompt_tokens_ + state->prompt_tokens > options_.max_queued_prompt_tokens) {
      if (observer_) observer_->OnRejected("token_backlog");
      return absl::ResourceExhaustedError(absl::StrCat("the queued prompt tokens would exceed ", options_.max_queued_prompt_tokens,
                                                       "; retry later"));
    }
    if (request.request_id.empty()) request.request_id = absl::StrCat("req-", next_request_number_++);
    if (live_.contains(request.request_id)) {
      return absl::AlreadyExistsError(absl::StrCat("request id \"", request.request_id, "\" is already running"));
    }
    state->request_id = request.request_id;
    state->wake = [this] {
      {
        std::lock_guard<std::mutex> lock(mu_);
        poke_ = true;
      }
      cv_.notify_all();
    };
    live_[request.request_id] = state;
    inbox_prompt_tokens_ += state->prompt_tokens;
    inbox_.emplace_back(std::move(request), state);
  }
  cv_.notify_all();
  return std::make_unique<RequestHandle>(state);
}

bool Engine::Abort(const std::string& request_id) {
  std::shared_ptr<RequestState> state;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(request_id);
    if (it == live_.end() || !(state = it->second.lock())) return false;
    state->cancelled = true;
    poke_ = true;
  }
  cv_.notify_all();
  return true;
}

Load Engine::GetLoad() const {
  std::lock_guard<std::mutex> lock(mu_);
  Load l = load_;
  l.waiting += static_cast<int64_t>(inbox_.size());
  l.queued_prompt_tokens += inbox_prompt_tokens_;
  return l;
}

bool Engine::Drain(Clock::duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  draining_ = true;
  return cv_.wait_for(lock, timeout, [&] { return live_.empty(); });
}

bool Engine::draining() const {
  std::lock_guard<std::mutex> lock(mu_);
  return draining_;
}

bool Engine::idle() const {
  std::lock_guard<std::mutex> lock(mu_);
  return live_.empty();
}

void Engine::CheckInvariants() const { cache_->CheckInvariants(); }

uint64_t Engine::SeedFor(const Request& request, int index) {
  const uint64_t base = request.has_seed ? request.sampling.seed : seed_source_();
  // Completions of one request draw from distinct, reproducible streams.
  uint64_t x = base + 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(index);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  return x ^ (x >> 31);
}

void Engine::Admit(Request request, std::shared_ptr<RequestState> state) {
  auto seq = std::make_unique<Sequence>();
  seq->id = next_seq_id_++;
  seq->request = state;
  seq->tokens = request.tokens;
  seq->num_prompt = static_cast<int64_t>(request.tokens.size());
  const int64_t max_tokens = request.stop.max_tokens.value_or(max_model_len_ - seq->num_prompt);
  seq->max_total_tokens = std::min<int64_t>(seq->num_prompt + max_tokens, max_model_len_);
  seq->priority = request.priority;
  seq->n = request.n;
  seq->arrival = arrivals_++;
  seq->sampler = Sampler(SeedFor(request, 0));
  seq->history.AddPrompt(seq->tokens);
  seq->detokenizer = std::make_unique<IncrementalDetokenizer>(*tokenizer_, seq->tokens);
  seq->stop_checker = std::make_unique<StopChecker>(request.stop.stop, request.stop.include_stop_in_output);
  seq->timings.arrival = Clock::now();
  seq->params = std::make_shared<const Request>(std::move(request));
  Sequence* raw = seq.get();
  seqs_[raw->id] = std::move(seq);
  scheduler_->AddWaiting(raw);
}

void Engine::Loop() {
  while (true) {
    std::deque<std::pair<Request, std::shared_ptr<RequestState>>> incoming;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto ready = [&] { return stop_ || poke_ || !inbox_.empty() || scheduler_->num_running() > 0; };
      if (scheduler_->num_waiting() > 0) {
        cv_.wait_for(lock, std::chrono::milliseconds(5), ready);  // waiting work retries soon
      } else {
        cv_.wait(lock, ready);
      }
      if (stop_) break;
      poke_ = false;
      incoming.swap(inbox_);
      inbox_prompt_tokens_ = 0;
    }
    for (auto& [request, state] : incoming) Admit(std::move(request), std::move(state));
    Step();
    last_progress_ = Clock::now().time_since_epoch().count();
  }
  // Shutting down: every unfinished completion gets its Final, queued requests included.
  std::deque<std::pair<Request, std::shared_ptr<RequestState>>> incoming;
  {
    std::lock_guard<std::mutex> lock(mu_);
    incoming.swap(inbox_);
  }
  for (auto& [request, state] : incoming) Admit(std::move(request), std::move(state));
  std::vector<Sequence*> left;
  for (auto& [id, seq] : seqs_) left.push_back(seq.get());
  for (Sequence* s : left) Finish(s, FinishReason::kError, "", "the engine stopped");
  Publish();
}

void Engine::Step() {
  const auto start = Clock::now();
  // Cancellations and deadlines take effect at the step boundary.
  std::vector<Sequence*> ended;
  for (auto& [id, seq] : seqs_) {
    if (seq->request->cancelled || (seq->params->deadline && start >= *seq->params->deadline)) ended.push_back(seq.get());
  }
  for (Sequence* s : ended) {
    Finish(s, s->request->cancelled ? FinishReason::kCancelled : FinishReason::kTimeLimit);
  }

  SchedulerOutput out = scheduler_->Schedule();
  for (Sequence* s : out.refused) {
    seqs_.at(s->id)->running = false;
    Finish(s, FinishReason::kError, "",
           absl::StrCat("preempted more than ", options_.scheduler.max_preemptions, " times for lack of KV cache pages"));
  }
  StepStats stats;
  if (!out.empty()) {
    std::vector<RunnerSeq> work;
    work.reserve(out.seqs.size());
    for (const ScheduledSeq& e : out.seqs) {
      Sequence* s = e.seq;
      if (!s->ever_scheduled) {
        s->ever_scheduled = true;
        s->timings.scheduled = start;
        s->timings.scheduled_set = true;
      }
      const std::span<const int> tokens(s->tokens.data() + e.slots.first_token, e.slots.num_tokens);
      work.push_back({s->id, &cache_->Tables(s->id), e.slots.first_token, tokens, e.slots.copies, e.samples});
      const int64_t prompt_part = std::max<int64_t>(0, std::min(s->num_prompt, e.slots.first_token + e.slots.num_tokens) -
                                                           e.slots.first_token);
      stats.prompt_tokens += prompt_part;
      // Query t reads min(n, t/l' + 1) selection blocks.
      const NsaParams& p = config().nsa;
      for (int64_t t = e.slots.first_token; t < e.slots.first_token + e.slots.num_tokens; ++t) {
        stats.selected_blocks += std::min<int64_t>(p.num_selected, t / p.select_block + 1);
      }
    }
    if (runner_->SamplesOnDevice()) {
      const absl::Status status = runner_->ExecuteKeepingLogits(work);
      scheduler_->Commit(out);
      if (!status.ok()) {
        for (const ScheduledSeq& e : out.seqs) Finish(e.seq, FinishReason::kError, "", std::string(status.message()));
      } else {
        std::vector<Sequence*> parents;
        for (const ScheduledSeq& e : out.seqs) {
          if (e.samples) parents.push_back(e.seq);
        }
        if (!parents.empty()) SampleOnDevice(parents);
      }
    } else {
      absl::StatusOr<std::vector<std::vector<float>>> logits = runner_->Execute(work);
      scheduler_->Commit(out);
      if (!logits.ok()) {
        for (const ScheduledSeq& e : out.seqs) Finish(e.seq, FinishReason::kError, "", std::string(logits.status().message()));
      } else {
        size_t j = 0;
        for (const ScheduledSeq& e : out.seqs) {
          if (e.samples) Sample(e.seq, (*logits)[j++]);
        }
      }
    }
    // One delta per completion per step.
    const auto now = Clock::now();
    for (const ScheduledSeq& e : out.seqs) {
      auto it = seqs_.find(e.seq->id);
      if (it == seqs_.end()) continue;  // finished this step: its Final carried the rest
      Flush(it->second.get());
    }
    stats.generated_tokens = 0;
    for (const ScheduledSeq& e : out.seqs) stats.generated_tokens += e.samples;
    stats.duration = now - start;
  }
  stats.batched_tokens = out.num_batched_tokens;
  stats.num_preempted = static_cast<int>(out.preempted.size());
  stats.prefix_queries = cache_->prefix_queries();
  stats.prefix_hits = cache_->prefix_hits();
  for (const auto& [id, seq] : seqs_) {
    if (seq->running) stats.summary_entries += config().nsa.NumCompressed(seq->num_computed);
  }
  stats.pages_used = cache_->pool().num_used();
  stats.pages_cached = cache_->pool().num_evictable();
  stats.pages_free = cache_->pool().num_free();
  Publish();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats.load = load_;
  }
  if (observer_ && (!out.empty() || !ended.empty())) observer_->OnStep(stats);
}

std::vector<Sequence*> Engine::ForkCompletions(Sequence* seq) {
  const Request& r = *seq->params;
  std::vector<Sequence*> children;
  if (r.n <= 1 || seq->index != 0 || seq->forked) return children;
  seq->forked = true;
  for (int i = 1; i < r.n; ++i) {
    auto child = std::make_unique<Sequence>();
    child->id = next_seq_id_++;
    child->index = i;
    child->request = seq->request;
    child->params = seq->params;
    child->tokens = seq->tokens;
    child->num_prompt = seq->num_prompt;
    child->num_computed = seq->num_computed;
    child->max_total_tokens = seq->max_total_tokens;
    child->priority = seq->priority;
    child->arrival = seq->arrival;
    child->ever_scheduled = true;
    child->forked = true;
    child->cached_tokens = seq->cached_tokens;
    child->num_preemptions = seq->num_preemptions;
    child->sampler = Sampler(SeedFor(r, i));
    child->history = seq->history;
    child->detokenizer = std::make_unique<IncrementalDetokenizer>(*tokenizer_, seq->tokens);
    child->stop_checker = std::make_unique<StopChecker>(r.stop.stop, r.stop.include_stop_in_output);
    child->timings = seq->timings;
    cache_->Fork(seq->id, child->id);
    Sequence* raw = child.get();
    seqs_[raw->id] = std::move(child);
    scheduler_->AddRunning(raw);
    children.push_back(raw);
  }
  return children;
}

std::vector<int> Engine::BannedIds(const Sequence* seq) const {
  const Request& r = *seq->params;
  std::vector<int> banned;
  if (seq->num_output() < r.stop.min_tokens) {
    banned = r.stop.stop_token_ids;
    if (!r.stop.ignore_eos) banned.push_back(config().eos_token_id);
  }
  return banned;
}

void Engine::Sample(Sequence* seq, std::span<const float> logits) {
  const Request& r = *seq->params;
  for (Sequence* child : ForkCompletions(seq)) {
    Sample(child, logits);
    if (auto it = seqs_.find(child->id); it != seqs_.end()) Flush(child);
  }
  const std::vector<int> banned = BannedIds(seq);
  const SampleResult result =
      seq->sampler.Sample(logits, r.sampling, tokenizer_->vocab_size(), &seq->history, banned, r.logprobs);
  AppendToken(seq, result);
}

void Engine::SampleOnDevice(const std::vector<Sequence*>& parents) {
  // Draws in the order the host path takes them: each parent's new completions, then the parent.
  std::vector<Sequence*> order;
  std::vector<SampleDraw> draws;
  std::vector<bool> is_child;
  for (size_t row = 0; row < parents.size(); ++row) {
    std::vector<Sequence*> group = ForkCompletions(parents[row]);
    const size_t children = group.size();
    group.push_back(parents[row]);
    for (size_t k = 0; k < group.size(); ++k) {
      Sequence* s = group[k];
      const Request& r = *s->params;
      draws.push_back(SampleDraw{static_cast<int>(row), &r.sampling, &s->history, BannedIds(s), tokenizer_->vocab_size(),
                                 r.logprobs, s->sampler.UniformFor(r.sampling)});
      order.push_back(s);
      is_child.push_back(k < children);
    }
  }
  absl::StatusOr<std::vector<SampleResult>> results = runner_->SampleLast(draws);
  for (size_t i = 0; i < order.size(); ++i) {
    if (!results.ok()) {
      Finish(order[i], FinishReason::kError, "", std::string(results.status().message()));
      continue;
    }
    AppendToken(order[i], (*results)[i]);
    if (is_child[i]) {
      if (auto it = seqs_.find(order[i]->id); it != seqs_.end()) Flush(order[i]);
    }
  }
}

void Engine::AppendToken(Sequence* seq, const SampleResult& result) {
  const Request& r = *seq->params;
  const int token = result.token;
  seq->tokens.push_back(token);
  seq->history.AddOutput(token);
  seq->pending.token_ids.push_back(token);
  if (r.logprobs >= 0) seq->pending.logprobs.push_back({token, result.logprob, result.top});
  const auto now = Clock::now();
  std::optional<Clock::time_point> previous;
  if (!seq->timings.first_token_set) {
    seq->timings.first_token = now;
    seq->timings.first_token_set = true;
  } else {
    previous = seq->last_token_time;
  }
  seq->last_token_time = now;
  if (observer_) observer_->OnToken(now, previous);

  if (token == config().eos_token_id && !r.stop.ignore_eos) return Finish(seq, FinishReason::kEos);
  if (std::find(r.stop.stop_token_ids.begin(), r.stop.stop_token_ids.end(), token) != r.stop.stop_token_ids.end()) {
    return Finish(seq, FinishReason::kStopToken, std::to_string(token));
  }
  const std::string text = seq->detokenizer->Add(token);
  StopChecker::Result stop = seq->stop_checker->Add(text, seq->num_output() >= r.stop.min_tokens);
  seq->pending.text += stop.text;
  if (stop.matched) return Finish(seq, FinishReason::kStopSequence, *stop.matched);
  if (static_cast<int64_t>(seq->tokens.size()) >= seq->max_total_tokens) return Finish(seq, FinishReason::kLength);
}

void Engine::Flush(Sequence* seq) {
  if (seq->pending.token_ids.empty() && seq->pending.text.empty()) return;
  seq->pending.index = seq->index;
  outbox_.emplace_back(seq->request, std::move(seq->pending));
  seq->pending = Delta();
}

void Engine::Finish(Sequence* seq, FinishReason reason, std::string matched, std::string error) {
  if (reason != FinishReason::kStopSequence) seq->pending.text += seq->stop_checker->Flush();
  Flush(seq);
  Final f;
  f.index = seq->index;
  f.reason = reason;
  f.matched_stop = std::move(matched);
  f.error = std::move(error);
  f.before_start = !seq->ever_scheduled;
  f.usage.prompt_tokens = seq->num_prompt;
  f.usage.completion_tokens = seq->num_output();
  f.usage.cached_tokens = seq->cached_tokens;
  f.timings = seq->timings;
  f.timings.done = Clock::now();
  f.num_preemptions = seq->num_preemptions;
  if (observer_) observer_->OnFinished(f);
  scheduler_->Remove(seq);
  std::shared_ptr<RequestState> state = seq->request;
  // Ending before the first sample, a parent ends the completions it would have forked too.
  const int unborn = seq->index == 0 && !seq->forked ? seq->params->n - 1 : 0;
  for (int i = 1; i <= unborn; ++i) {
    Final sibling = f;
    sibling.index = i;
    if (observer_) observer_->OnFinished(sibling);
    outbox_.emplace_back(state, std::move(sibling));
  }
  outbox_.emplace_back(state, std::move(f));
  seqs_.erase(seq->id);
}

void Engine::Publish() {
  // The load snapshot first: a client that sees an event sees the load after its step.
  std::vector<std::shared_ptr<RequestState>> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    load_.running = static_cast<int64_t>(scheduler_->num_running());
    load_.waiting = static_cast<int64_t>(scheduler_->num_waiting());
    load_.queued_prompt_tokens = scheduler_->queued_prompt_tokens();
    load_.kv_cache_usage = cache_->Usage();
  }
  for (auto& [state, event] : outbox_) {
    const bool is_final = std::holds_alternative<Final>(event);
    state->Push(std::move(event));
    if (is_final) {
      std::lock_guard<std::mutex> lock(state->mu);
      if (state->finals_pending == 0) done.push_back(state);  // its last Final: exactly once
    }
  }
  outbox_.clear();
  if (done.empty()) return;
  for (const auto& state : done) {
    std::lock_guard<std::mutex> lock(state->wake_mu);
    state->wake = nullptr;
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& state : done) live_.erase(state->request_id);
  if (live_.empty()) cv_.notify_all();  // Drain waits for this
}

}  // namespace nsa
