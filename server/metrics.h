// Prometheus metrics with vLLM's names, types and buckets (serving.md), so its dashboards work
// unchanged, plus what vLLM lacks: engine step time, rejections by reason, the queued prompt
// backlog, and NSA's own (selection blocks read, summaries held, pages by state). Every series
// carries the model_name label. Fed by the engine's observer hooks; prometheus-cpp's metrics are
// thread-safe, so OnRejected may come from any thread.
//
// /metrics is served by cpp-httplib (the library of the OpenAI gateway) rendering the registry
// with prometheus-cpp's text serializer: prometheus-cpp's own exposer embeds civetweb, which
// failed to start on the GPU machine with the bundled libraries ("null context when
// constructing CivetServer") while any other listener bound fine.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "engine/engine.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace httplib {
class Server;
}

namespace nsa {

class Metrics : public EngineObserver {
 public:
  Metrics(const std::string& model_name, int max_model_len);
  ~Metrics() override;

  // Serves /metrics on `address` ("127.0.0.1:0" picks a port); throws std::runtime_error when it
  // cannot listen there.
  void Expose(const std::string& address);
  int port() const;
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  void OnStep(const StepStats& stats) override;
  void OnToken(Clock::time_point when, std::optional<Clock::time_point> previous) override;
  void OnFinished(const Final& final) override;
  void OnRejected(const std::string& reason) override;

 private:
  prometheus::Counter& Reason(prometheus::Family<prometheus::Counter>& family, const char* label, const std::string& value);

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<httplib::Server> http_;
  std::thread http_thread_;
  int port_ = 0;
  prometheus::Labels labels_;

  prometheus::Gauge *running_, *waiting_, *kv_usage_, *queued_tokens_, *summary_entries_;
  prometheus::Gauge *pages_used_, *pages_cached_, *pages_free_;
  prometheus::Counter *prompt_tokens_, *generation_tokens_, *preemptions_, *prefix_queries_, *prefix_hits_;
  prometheus::Counter* selected_blocks_;
  prometheus::Family<prometheus::Counter>* success_;
  prometheus::Family<prometheus::Counter>* rejected_;
  prometheus::Histogram *ttft_, *itl_, *tpot_, *e2e_, *queue_, *prefill_, *decode_;
  prometheus::Histogram *prompt_len_, *generation_len_, *iteration_tokens_, *step_time_;
  int64_t last_prefix_queries_ = 0, last_prefix_hits_ = 0;
};

}  // namespace nsa
