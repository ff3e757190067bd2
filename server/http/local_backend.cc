#include "server/http/local_backend.h"

#include <fstream>

#include "nlohmann/json.hpp"
#include "prometheus/text_serializer.h"

namespace nsa {
namespace {

class LocalStream : public GenerationStream {
 public:
  explicit LocalStream(std::unique_ptr<RequestHandle> handle) : handle_(std::move(handle)) {}
  bool Next(Clock::duration timeout, std::optional<Event>* event) override { return handle_->NextFor(timeout, event); }
  void Abort() override { handle_->Abort(); }

 private:
  std::unique_ptr<RequestHandle> handle_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<GenerationStream>> LocalBackend::Generate(Request request) {
  absl::StatusOr<std::unique_ptr<RequestHandle>> handle = engine_->Submit(std::move(request));
  if (!handle.ok()) return handle.status();
  return std::unique_ptr<GenerationStream>(new LocalStream(std::move(*handle)));
}

absl::StatusOr<std::vector<int>> LocalBackend::Tokenize(const std::string& text, bool add_special_tokens) {
  return engine_->tokenizer().Encode(text, add_special_tokens);
}

absl::StatusOr<std::string> LocalBackend::Detokenize(const std::vector<int>& ids, std::vector<std::string>* per_token) {
  const Tokenizer& tok = engine_->tokenizer();
  for (int id : ids) {
    if (id < 0 || id >= tok.vocab_size()) {
      return absl::InvalidArgumentError("token id " + std::to_string(id) + " is outside the vocabulary");
    }
    if (per_token) per_token->push_back(tok.Decode({id}));
  }
  return tok.Decode(ids);
}

std::string LocalBackend::MetricsText() {
  if (metrics_ == nullptr) return "";
  return prometheus::TextSerializer().Serialize(metrics_->registry()->Collect());
}

void ReadTokenizerConfig(const std::string& model_dir, BackendModelInfo* info) {
  std::ifstream in(model_dir + "/tokenizer_config.json");
  if (!in) return;
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return;
  auto token = [&](const char* key) -> std::string {
    auto it = j.find(key);
    if (it == j.end()) return "";
    if (it->is_string()) return it->get<std::string>();
    if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"];
    return "";
  };
  if (auto it = j.find("chat_template"); it != j.end() && it->is_string()) info->chat_template = it->get<std::string>();
  info->bos_token = token("bos_token");
  info->eos_token = token("eos_token");
}

}  // namespace nsa
