// One request through one API, timed chunk by chunk (serving_metrics.h defines a chunk).
// Implementations: gRPC nsa.v1.Generation (grpc_client.cc) and the OpenAI HTTP API with SSE
// (http_client.cc). Send is called from many threads at once, one request per thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/serving/serving_metrics.h"
#include "bench/serving/workload.h"

namespace nsa::bench {

using Clock = std::chrono::steady_clock;

inline double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// What the server says about itself before the run (0 / empty: it did not say).
struct ServerInfo {
  std::string model;
  int64_t max_model_len = 0;
  int64_t vocab_size = 0;
};

struct SendOptions {
  bool ignore_eos = true;
  std::optional<double> temperature;  // absent: the server's default
  double timeout_s = 6 * 3600;        // per request, as vLLM's client session
};

class ApiClient {
 public:
  virtual ~ApiClient() = default;
  virtual absl::StatusOr<ServerInfo> Probe() = 0;
  // Readies prompts for this API before the clock starts (openai-chat needs text).
  virtual absl::Status Prepare(std::vector<Prompt>* prompts) { return absl::OkStatus(); }
  // Sends one request and reads its stream to the end. Times in the result count from epoch.
  // Thread-safe; blocks for the whole request.
  virtual RequestOutput Send(const Prompt& prompt, Clock::time_point epoch) = 0;
};

// target: "host:port". Streams are spread over a few connections.
std::unique_ptr<ApiClient> MakeGrpcClient(const std::string& target, const SendOptions& options);

struct HttpClientOptions {
  std::string host;
  int port = 8000;
  bool chat = false;     // /v1/chat/completions (else /v1/completions)
  std::string endpoint;  // empty: the default of the API above
  std::string model;     // empty: the first model of GET /v1/models
  std::string api_key;   // sent as "Authorization: Bearer KEY" when set
};
std::unique_ptr<ApiClient> MakeHttpClient(const HttpClientOptions& http, const SendOptions& options);

}  // namespace nsa::bench
