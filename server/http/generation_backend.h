// What the OpenAI-compatible gateway needs from an engine, whether the engine runs in this
// process (LocalBackend) or behind gRPC on other servers (RemoteBackend): one HTTP code path for
// both ways of running.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/request.h"

namespace nsa {

class GenerationStream {
 public:
  virtual ~GenerationStream() = default;
  // Waits up to `timeout`; false on time-out. *event = nullopt once every Final was returned.
  virtual bool Next(Clock::duration timeout, std::optional<Event>* event) = 0;
  virtual void Abort() = 0;
};

struct BackendModelInfo {
  std::string model_name;
  int max_model_len = 0;
  int vocab_size = 0;
  std::string chat_template;  // the checkpoint's (tokenizer_config.json), or empty
  std::string bos_token, eos_token;
};

class GenerationBackend {
 public:
  virtual ~GenerationBackend() = default;
  // Validation and admission happen here, before any byte of the response is sent: the status
  // codes are those of the engine (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE, ...).
  virtual absl::StatusOr<std::unique_ptr<GenerationStream>> Generate(Request request) = 0;
  virtual absl::StatusOr<std::vector<int>> Tokenize(const std::string& text, bool add_special_tokens) = 0;
  // The text of `ids`, and with per_token each id's own text.
  virtual absl::StatusOr<std::string> Detokenize(const std::vector<int>& ids, std::vector<std::string>* per_token) = 0;
  virtual absl::StatusOr<BackendModelInfo> ModelInfo() = 0;
  // Ready to take requests (loaded, warm, not draining).
  virtual bool Ready() = 0;
  // Alive: the engine loop made progress recently or has nothing to do.
  virtual bool Live() = 0;
  // Prometheus text for /metrics (empty when metrics live elsewhere).
  virtual std::string MetricsText() = 0;
};

}  // namespace nsa
