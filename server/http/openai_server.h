// The OpenAI-compatible HTTP API over a GenerationBackend (cpp-httplib; README says why):
//
//   POST /v1/completions, /v1/chat/completions   streaming (SSE, `data: [DONE]`) or not
//   GET  /v1/models                              with root and max_model_len
//   POST /tokenize, /detokenize
//   GET  /health (liveness), /ready (readiness), /metrics (Prometheus text; open without a key)
//
// Every request is validated and admitted before the status line is sent, so overload is a real
// 429/503 and a bad request a 400 with the OpenAI error envelope. A client that disconnects
// mid-stream aborts its request. API keys are compared in constant time.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "server/http/generation_backend.h"

namespace httplib {
class Server;
}

namespace nsa {

struct OpenAIServerOptions {
  std::string served_model_name;  // default: the backend's model name
  std::vector<std::string> api_keys;  // empty: no authentication
  size_t max_body_bytes = size_t{8} << 20;
  int max_connections = 2048;  // worker threads: one per open connection (SSE streams included)
  std::string chat_template;  // overrides the checkpoint's: a built-in name or template text
};

class OpenAIServer {
 public:
  OpenAIServer(GenerationBackend* backend, OpenAIServerOptions options);
  ~OpenAIServer();

  // Binds (port 0 picks one) and serves on a thread; returns the port, or an error.
  absl::StatusOr<int> Start(const std::string& host, int port);
  void Stop();

 private:
  void Routes();
  GenerationBackend* backend_;
  OpenAIServerOptions options_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
};

}  // namespace nsa
