// nsa-server: the engine behind gRPC (nsa.v1.Generation, grpc.health.v1.Health, reflection) with
// Prometheus metrics on their own port.
//
//   nsa-server [--model DIR] [--host 0.0.0.0] [--grpc-port 50051] [--metrics-port 9400] ...
//
// Start-up: load, build the engine, expose metrics, start gRPC, run one warm-up token, then
// report ready (health SERVING) and print
//   nsa-server: grpc HOST:PORT metrics HOST:PORT http HOST:PORT ready
// SIGTERM/SIGINT: readiness goes NOT_SERVING, new requests get UNAVAILABLE, in-flight ones finish
// (up to --drain-timeout-s), then exit 0.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/flags/flag.h"
#include "server/http/chat_template.h"
#include "absl/flags/usage.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "engine/runner/backend.h"
#include "kernels/common/status.h"
#include "models/flags.h"
#include "models/tokenizer.h"
#include "server/grpc_service.h"
#include "server/http/local_backend.h"
#include "server/http/openai_server.h"
#include "server/metrics.h"

#ifndef NSA_DEFAULT_MODEL_DIR
#define NSA_DEFAULT_MODEL_DIR "models/tiny"
#endif

ABSL_FLAG(std::string, model, NSA_DEFAULT_MODEL_DIR, "model directory (config.json, safetensors, tokenizer.model)");
ABSL_FLAG(std::string, model_name, "", "name served to clients and in metrics (default: the directory's name, or the preset's)");
ABSL_FLAG(std::string, random_weights, "",
          "benchmarks: serve this preset (tiny, tiny-paper, fla-340m, 1.3b, 7b, paper) with random weights, generated on "
          "the GPU by the CUDA backend, instead of --model's config and checkpoint; --model then only supplies the tokenizer");
ABSL_FLAG(uint64_t, random_weights_seed, 0, "seed of --random-weights");
ABSL_FLAG(std::string, tokenizer, "", "sentencepiece tokenizer.model (default: --model's)");
ABSL_FLAG(std::string, host, "0.0.0.0", "address to listen on");
ABSL_FLAG(int, grpc_port, 50051, "gRPC port (0: pick a free one)");
ABSL_FLAG(int, metrics_port, 9400, "Prometheus /metrics port (0: pick a free one)");
ABSL_FLAG(int, http_port, 8000, "OpenAI-compatible HTTP port (0: pick a free one, -1: off)");
ABSL_FLAG(std::vector<std::string>, api_key, {}, "HTTP API keys, comma-separated (empty: no authentication)");
ABSL_FLAG(int64_t, max_body_kib, 8192, "largest HTTP request body, KiB");
ABSL_FLAG(int, max_connections, 2048, "HTTP worker threads: connections served at once (SSE streams included)");
ABSL_FLAG(std::string, chat_template, "", "chat template: a built-in (chatml, llama2, plain) or a file; default: the checkpoint's");
ABSL_FLAG(std::string, backend, "auto", "auto, cpu or cuda");
ABSL_FLAG(int64_t, kv_cache_mib, 512, "CPU backend: host memory for KV cache pages, MiB");
ABSL_FLAG(double, gpu_memory_utilization, 0.9, "CUDA backend: share of the GPU's memory for weights, KV cache and buffers");
ABSL_FLAG(bool, enforce_eager, false, "CUDA backend: no CUDA graphs for decode steps");
ABSL_FLAG(int, max_model_len, 0, "longest prompt + completion (0: the model's, capped by the KV cache)");
ABSL_FLAG(int, max_num_seqs, 256, "most sequences in one step");
ABSL_FLAG(int64_t, max_num_batched_tokens, 2048, "token budget of one step (prefill chunks + decodes)");
ABSL_FLAG(int, max_waiting_requests, 1024, "waiting requests before RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_queued_prompt_tokens, int64_t{1} << 22, "queued prompt tokens before RESOURCE_EXHAUSTED");
ABSL_FLAG(bool, disable_prefix_caching, false, "turn off prefix caching");
ABSL_FLAG(int, drain_timeout_s, 30, "on SIGTERM, how long in-flight requests may take");
ABSL_FLAG(int, liveness_stall_s, 60, "liveness fails when the engine loop has work but no progress for this long");
ABSL_FLAG(uint64_t, seed, 0, "seeds of unseeded requests derive from this (0: random)");

namespace nsa {
namespace {

int Port(int flag, const char* name) {
  if (flag < 0 || flag > 65535) {
    std::fprintf(stderr, "nsa-server: --%s must be in [0, 65535], got %d\n", name, flag);
    std::exit(2);
  }
  return flag;
}

absl::Status Serve() {
  // Signals go to sigwait below, not to whichever thread happens to run.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const std::string dir = absl::GetFlag(FLAGS_model);
  const std::string random_weights = absl::GetFlag(FLAGS_random_weights);
  std::string model_name = absl::GetFlag(FLAGS_model_name);
  if (model_name.empty()) model_name = random_weights.empty() ? std::filesystem::path(dir).filename().string() : random_weights;
  const int grpc_port = Port(absl::GetFlag(FLAGS_grpc_port), "grpc-port");
  const int metrics_port = Port(absl::GetFlag(FLAGS_metrics_port), "metrics-port");
  const int http_port = absl::GetFlag(FLAGS_http_port) == -1 ? -1 : Port(absl::GetFlag(FLAGS_http_port), "http-port");
  if (absl::GetFlag(FLAGS_max_body_kib) <= 0 || absl::GetFlag(FLAGS_max_connections) <= 0) {
    return absl::InvalidArgumentError("--max-body-kib and --max-connections must be positive");
  }
  ASSIGN_OR_RETURN(const std::string chat_template, ChatTemplateFromFlag(absl::GetFlag(FLAGS_chat_template)));
  const std::string host = absl::GetFlag(FLAGS_host);
  if (absl::GetFlag(FLAGS_kv_cache_mib) <= 0) return absl::InvalidArgumentError("--kv-cache-mib must be positive");

  BackendOptions backend_options;
  backend_options.backend = absl::GetFlag(FLAGS_backend);
  backend_options.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_mib) << 20;
  backend_options.gpu_memory_utilization = absl::GetFlag(FLAGS_gpu_memory_utilization);
  if (!(backend_options.gpu_memory_utilization > 0 && backend_options.gpu_memory_utilization <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--gpu-memory-utilization must be in (0, 1], got ", backend_options.gpu_memory_utilization));
  }
  backend_options.enforce_eager = absl::GetFlag(FLAGS_enforce_eager);
  backend_options.max_num_seqs = absl::GetFlag(FLAGS_max_num_seqs);
  backend_options.max_num_batched_tokens = absl::GetFlag(FLAGS_max_num_batched_tokens);
  backend_options.max_model_len = absl::GetFlag(FLAGS_max_model_len);
  backend_options.random_weights = random_weights;
  backend_options.random_weights_seed = absl::GetFlag(FLAGS_random_weights_seed);
  // The tokenizer first: a missing one is reported before minutes of loading.
  const std::string tokenizer_path = absl::GetFlag(FLAGS_tokenizer).empty() ? dir + "/tokenizer.model" : absl::GetFlag(FLAGS_tokenizer);
  std::string error;
  std::unique_ptr<Tokenizer> tokenizer = Tokenizer::Load(tokenizer_path, &error);
  if (!tokenizer) return absl::InvalidArgumentError(error);
  ASSIGN_OR_RETURN(Backend backend, MakeBackend(dir, backend_options));

  EngineOptions options;
  options.model_name = model_name;
  options.max_model_len = absl::GetFlag(FLAGS_max_model_len);
  options.scheduler.max_num_seqs = absl::GetFlag(FLAGS_max_num_seqs);
  options.scheduler.max_num_batched_tokens = absl::GetFlag(FLAGS_max_num_batched_tokens);
  options.max_waiting_requests = absl::GetFlag(FLAGS_max_waiting_requests);
  options.max_queued_prompt_tokens = absl::GetFlag(FLAGS_max_queued_prompt_tokens);
  options.prefix_caching = !absl::GetFlag(FLAGS_disable_prefix_caching);
  options.seed = absl::GetFlag(FLAGS_seed);
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::Create(options, std::move(backend.runner), std::move(tokenizer)));
  std::fprintf(stderr, "nsa-server: %s; %s; max_model_len %d\n", backend.note.c_str(), engine->DescribeBackend().c_str(),
               engine->max_model_len());

  Metrics metrics(model_name, engine->max_model_len());
  try {
    metrics.Expose(absl::StrCat(host, ":", metrics_port));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", host, ":", metrics_port, ": ", e.what()));
  }
  engine->SetObserver(&metrics);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  BackendModelInfo info;
  info.model_name = model_name;
  info.max_model_len = engine->max_model_len();
  info.vocab_size = engine->config().vocab_size;
  ReadTokenizerConfig(dir, &info);
  GenerationService service(engine.get(), info);
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(absl::StrCat(host, ":", grpc_port), grpc::InsecureServerCredentials(), &bound_port);
  builder.RegisterService(&service);
  // A long non-streaming call sends no frames for a while: let clients keep the link alive.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) return absl::UnavailableError(absl::StrCat("cannot listen on ", host, ":", grpc_port));
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus("", false);
  health->SetServingStatus("nsa.v1.Generation", false);
  health->SetServingStatus("liveness", true);

  // Warm-up: one token through the whole path before reporting ready.
  {
    Request warm;
    warm.tokens = {engine->config().bos_token_id};
    warm.stop.max_tokens = 1;
    warm.request_id = "warm-up";
    ASSIGN_OR_RETURN(std::unique_ptr<RequestHandle> h, engine->Submit(warm));
    while (h->Next()) {
    }
  }
  // The OpenAI-compatible gateway in this process: same engine, no gRPC hop.
  std::atomic<bool> ready{false};
  const auto stall = std::chrono::seconds(absl::GetFlag(FLAGS_liveness_stall_s));
  auto live = [&] { return engine->idle() || Clock::now() - engine->last_progress() < stall; };
  LocalBackend local(engine.get(), &metrics, info, [&] { return ready.load(); }, live);
  OpenAIServerOptions http_options;
  http_options.served_model_name = model_name;
  http_options.api_keys = absl::GetFlag(FLAGS_api_key);
  http_options.max_body_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_max_body_kib)) << 10;
  http_options.max_connections = absl::GetFlag(FLAGS_max_connections);
  http_options.chat_template = chat_template;
  OpenAIServer http(&local, http_options);
  int bound_http = -1;
  if (http_port >= 0) {
    ASSIGN_OR_RETURN(bound_http, http.Start(host, http_port));
  }

  health->SetServingStatus("", true);
  health->SetServingStatus("nsa.v1.Generation", true);
  ready = true;
  std::printf("nsa-server: grpc %s:%d metrics %s:%d http %s:%d ready\n", host.c_str(), bound_port, host.c_str(), metrics.port(),
              host.c_str(), bound_http);
  std::fflush(stdout);

  // Liveness: the loop made progress recently, or has nothing to do.
  std::atomic<bool> stopping{false};
  std::thread watchdog([&] {
    while (!stopping) {
      health->SetServingStatus("liveness", live());
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  });

  int signal = 0;
  sigwait(&signals, &signal);
  std::fprintf(stderr, "nsa-server: %s: draining (up to %d s)\n", signal == SIGTERM ? "SIGTERM" : "SIGINT",
               absl::GetFlag(FLAGS_drain_timeout_s));
  health->SetServingStatus("", false);
  health->SetServingStatus("nsa.v1.Generation", false);
  ready = false;
  const bool drained = engine->Drain(std::chrono::seconds(absl::GetFlag(FLAGS_drain_timeout_s)));
  std::fprintf(stderr, "nsa-server: %s\n", drained ? "drained" : "drain timed out; cancelling what is left");
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  http.Stop();
  stopping = true;
  watchdog.join();
  return absl::OkStatus();
}

}  // namespace
}  // namespace nsa

int main(int argc, char** argv) {
  // Debian's Abseil checks every absl::Mutex acquisition for lock-order cycles (a global graph
  // behind one lock): gRPC's internals take absl::Mutex per call, and with 1,000 streams the
  // server spent most of its time contending on that graph (perf: futex waits, GraphCycles).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::SetProgramUsageMessage("nsa-server [--model DIR] [--grpc-port P] [--metrics-port M] ... (see --help)");
  nsa::ParseFlags(argc, argv);
  const absl::Status status = nsa::Serve();
  if (!status.ok()) {
    std::fprintf(stderr, "nsa-server: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
