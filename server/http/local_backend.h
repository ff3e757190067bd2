// The gateway's backend when it runs inside nsa-server: calls the Engine directly.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "engine/engine.h"
#include "server/http/generation_backend.h"
#include "server/metrics.h"

namespace nsa {

class LocalBackend : public GenerationBackend {
 public:
  // `ready` reports readiness (warm, not draining); metrics may be null.
  LocalBackend(Engine* engine, Metrics* metrics, BackendModelInfo info, std::function<bool()> ready,
               std::function<bool()> live)
      : engine_(engine), metrics_(metrics), info_(std::move(info)), ready_(std::move(ready)), live_(std::move(live)) {}

  absl::StatusOr<std::unique_ptr<GenerationStream>> Generate(Request request) override;
  absl::StatusOr<std::vector<int>> Tokenize(const std::string& text, bool add_special_tokens) override;
  absl::StatusOr<std::string> Detokenize(const std::vector<int>& ids, std::vector<std::string>* per_token) override;
  absl::StatusOr<BackendModelInfo> ModelInfo() override { return info_; }
  bool Ready() override { return ready_(); }
  bool Live() override { return live_(); }
  std::string MetricsText() override;

 private:
  Engine* engine_;
  Metrics* metrics_;
  BackendModelInfo info_;
  std::function<bool()> ready_, live_;
};

// tokenizer_config.json's chat_template and special tokens, for BackendModelInfo (absent: empty).
void ReadTokenizerConfig(const std::string& model_dir, BackendModelInfo* info);

}  // namespace nsa
