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
  // CUDA: the share of the card's memory for weights, KV pages and work buffers (vLLM's
  // gpu_memory_utilization), the step limits the scheduler will use, and graphs for decode steps.
  double gpu_memory_utilization = 0.9;
  int max_num_seqs = 256;
  int64_t max_num_batched_tokens = 2048;
  int64_t max_model_len = 0;  // 0: the model's max_position_embeddings
  bool enforce_eager = false;
};

struct Backend {
  std::unique_ptr<ModelRunner> runner;
  std::string note;  // why this backend (for the log)
};

absl::StatusOr<Backend> MakeBackend(const std::string& model_dir, const BackendOptions& options);

}  // namespace nsa
