// Chooses and builds the model runner for a model directory: CUDA when a GPU is present and the
// CUDA runner is built, the CPU reference otherwise.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/runner/model_runner.h"

namespace nsa {

struct BackendOptions {
  std::string backend = "auto";  // "auto", "cpu" or "cuda"
  int64_t kv_cache_bytes = int64_t{512} << 20;  // CPU: host memory for KV pages
  bool progress = true;
};

struct Backend {
  std::unique_ptr<ModelRunner> runner;
  std::string note;  // why this backend (for the log)
};

absl::StatusOr<Backend> MakeBackend(const std::string& model_dir, const BackendOptions& options);

}  // namespace nsa
