#include "server/metrics.h"

#include <httplib.h>

#include <chrono>
#include <stdexcept>

#include "prometheus/histogram.h"
#include "prometheus/text_serializer.h"

namespace nsa {
namespace {

using prometheus::Histogram;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// vLLM's 1-2-5 series up to the model's context.
Histogram::BucketBoundaries TokenBuckets(int max_model_len) {
  Histogram::BucketBoundaries b;
  for (double scale = 1; scale <= max_model_len; scale *= 10) {
    for (double m : {1.0, 2.0, 5.0}) {
      if (m * scale <= max_model_len) b.push_back(m * scale);
    }
  }
  return b;
}

}  // namespace

Metrics::Metrics(const std::string& model_name, int max_model_len)
    : registry_(std::make_shared<prometheus::Registry>()), labels_{{"model_name", model_name}} {
  auto gauge = [&](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Register(*registry_).Add(labels_);
  };
  auto counter = [&](const char* name, const char* help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Register(*registry_).Add(labels_);
  };
  auto histogram = [&](const char* name, const char* help, Histogram::BucketBoundaries buckets) {
    return &prometheus::BuildHistogram().Name(name).Help(help).Register(*registry_).Add(labels_, std::move(buckets));
  };
  running_ = gauge("vllm:num_requests_running", "Number of requests in the running batch.");
  waiting_ = gauge("vllm:num_requests_waiting", "Number of requests waiting to be scheduled.");
  kv_usage_ = gauge("vllm:kv_cache_usage_perc", "KV cache usage, 1 = full.");
  queued_tokens_ = gauge("nsa:queued_prompt_tokens", "Prompt tokens waiting to be prefilled.");
  summary_entries_ = gauge("nsa:kv_summary_entries", "Compressed-block summaries held by running sequences (per layer and KV head).");
  auto& pages = prometheus::BuildGauge().Name("nsa:kv_pages").Help("KV cache pages by state.").Register(*registry_);
  auto with = [&](const char* key, const char* value) {
    prometheus::Labels l = labels_;
    l[key] = value;
    return l;
  };
  pages_used_ = &pages.Add(with("state", "used"));
  pages_cached_ = &pages.Add(with("state", "cached"));
  pages_free_ = &pages.Add(with("state", "free"));
  prompt_tokens_ = counter("vllm:prompt_tokens_total", "Prefill tokens processed.");
  generation_tokens_ = counter("vllm:generation_tokens_total", "Tokens generated.");
  preemptions_ = counter("vllm:num_preemptions_total", "Preemptions (by recompute).");
  prefix_queries_ = counter("vllm:prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.");
  prefix_hits_ = counter("vllm:prefix_cache_hits_total", "Prompt tokens found in the prefix cache.");
  selected_blocks_ = counter("nsa:selected_blocks_total", "Selection blocks read by queries (per layer and KV head).");
  success_ = &prometheus::BuildCounter().Name("vllm:request_success_total").Help("Finished requests by finish reason.").Register(*registry_);
  rejected_ = &prometheus::BuildCounter().Name("nsa:requests_rejected_total").Help("Requests refused at admission, by reason.").Register(*registry_);
  for (const char* r : {"stop", "length", "abort", "time_limit", "error"}) success_->Add(with("finished_reason", r));
  for (const char* r : {"invalid", "queue_full", "token_backlog", "draining"}) rejected_->Add(with("reason", r));

  const Histogram::BucketBoundaries ttft = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                            1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
  const Histogram::BucketBoundaries itl = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
                                           0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
  const Histogram::BucketBoundaries request = {0.3,  0.5,  0.8,  1.0,  1.5,  2.0,   2.5,   5.0,   10.0,  15.0, 20.0,
                                               30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
  Histogram::BucketBoundaries iteration;
  for (double b = 1; b <= 16384; b *= 2) {
    if (b != 2 && b != 4) iteration.push_back(b);  // vLLM's 1, 8, 16, 32, ... 16384
  }
  ttft_ = histogram("vllm:time_to_first_token_seconds", "Time to first token.", ttft);
  itl_ = histogram("vllm:inter_token_latency_seconds", "Time between consecutive tokens.", itl);
  tpot_ = histogram("vllm:request_time_per_output_token_seconds", "Decode time per output token, per request.", itl);
  e2e_ = histogram("vllm:e2e_request_latency_seconds", "Arrival to finish.", request);
  queue_ = histogram("vllm:request_queue_time_seconds", "Arrival to first scheduling.", request);
  prefill_ = histogram("vllm:request_prefill_time_seconds", "First scheduling to first token.", request);
  decode_ = histogram("vllm:request_decode_time_seconds", "First token to finish.", request);
  prompt_len_ = histogram("vllm:request_prompt_tokens", "Prompt tokens per request.", TokenBuckets(max_model_len));
  generation_len_ = histogram("vllm:request_generation_tokens", "Generated tokens per request.", TokenBuckets(max_model_len));
  iteration_tokens_ = histogram("vllm:iteration_tokens_total", "Tokens per engine step.", iteration);
  step_time_ = histogram("nsa:engine_step_seconds", "Engine step time (schedule, run, sample).",
                         {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0});
}

void Metrics::Expose(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("the metrics address needs HOST:PORT");
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const int port = std::stoi(address.substr(colon + 1));
  http_ = std::make_unique<httplib::Server>();
  std::weak_ptr<prometheus::Registry> registry = registry_;
  http_->Get("/metrics", [registry](const httplib::Request&, httplib::Response& res) {
    const std::shared_ptr<prometheus::Registry> r = registry.lock();
    if (!r) return;
    res.set_content(prometheus::TextSerializer().Serialize(r->Collect()), "text/plain; version=0.0.4; charset=utf-8");
  });
  port_ = port == 0 ? http_->bind_to_any_port(host) : (http_->bind_to_port(host, port) ? port : -1);
  if (port_ <= 0) {
    http_.reset();
    throw std::runtime_error("cannot listen there (port in use or address not local)");
  }
  http_thread_ = std::thread([this] { http_->listen_after_bind(); });
}

Metrics::~Metrics() {
  if (http_) {
    http_->stop();
    if (http_thread_.joinable()) http_thread_.join();
  }
}

int Metrics::port() const { return port_; }

void Metrics::OnStep(const StepStats& s) {
  running_->Set(static_cast<double>(s.load.running));
  waiting_->Set(static_cast<double>(s.load.waiting));
  kv_usage_->Set(s.load.kv_cache_usage);
  queued_tokens_->Set(static_cast<double>(s.load.queued_prompt_tokens));
  summary_entries_->Set(static_cast<double>(s.summary_entries));
  pages_used_->Set(static_cast<double>(s.pages_used));
  pages_cached_->Set(static_cast<double>(s.pages_cached));
  pages_free_->Set(static_cast<double>(s.pages_free));
  prompt_tokens_->Increment(static_cast<double>(s.prompt_tokens));
  generation_tokens_->Increment(static_cast<double>(s.generated_tokens));
  preemptions_->Increment(s.num_preempted);
  prefix_queries_->Increment(static_cast<double>(s.prefix_queries - last_prefix_queries_));
  prefix_hits_->Increment(static_cast<double>(s.prefix_hits - last_prefix_hits_));
  last_prefix_queries_ = s.prefix_queries;
  last_prefix_hits_ = s.prefix_hits;
  selected_blocks_->Increment(static_cast<double>(s.selected_blocks));
  if (s.batched_tokens > 0) {
    iteration_tokens_->Observe(static_cast<double>(s.batched_tokens));
    step_time_->Observe(Seconds(s.duration));
  }
}

void Metrics::OnToken(Clock::time_point when, std::optional<Clock::time_point> previous) {
  if (previous) itl_->Observe(Seconds(when - *previous));
}

prometheus::Counter& Metrics::Reason(prometheus::Family<prometheus::Counter>& family, const char* label,
                                     const std::string& value) {
  prometheus::Labels l = labels_;
  l[label] = value;
  return family.Add(l);
}

void Metrics::OnFinished(const Final& f) {
  const char* reason = "stop";
  switch (f.reason) {
    case FinishReason::kEos:
    case FinishReason::kStopSequence:
    case FinishReason::kStopToken: reason = "stop"; break;
    case FinishReason::kLength: reason = "length"; break;
    case FinishReason::kCancelled: reason = "abort"; break;
    case FinishReason::kTimeLimit: reason = "time_limit"; break;
    case FinishReason::kError: reason = "error"; break;
  }
  Reason(*success_, "finished_reason", reason).Increment();
  const Timings& t = f.timings;
  e2e_->Observe(Seconds(t.done - t.arrival));
  prompt_len_->Observe(static_cast<double>(f.usage.prompt_tokens));
  generation_len_->Observe(static_cast<double>(f.usage.completion_tokens));
  if (t.scheduled_set) queue_->Observe(Seconds(t.scheduled - t.arrival));
  if (t.first_token_set) {
    ttft_->Observe(Seconds(t.first_token - t.arrival));
    if (t.scheduled_set) prefill_->Observe(Seconds(t.first_token - t.scheduled));
    decode_->Observe(Seconds(t.done - t.first_token));
    if (f.usage.completion_tokens > 1) tpot_->Observe(Seconds(t.done - t.first_token) / (f.usage.completion_tokens - 1));
  }
}

void Metrics::OnRejected(const std::string& reason) { Reason(*rejected_, "reason", reason).Increment(); }

}  // namespace nsa
