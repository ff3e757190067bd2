// Chooses and builds the model runner for a model directory (or a preset with random weights):
// CUDA when a GPU is present and the CUDA runner is built, the CPU reference otherwise.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/runner/model_runner.h"
#include "models/config.h"

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
  // Not empty: a preset's shape (models/presets.h) with random weights of random_weights_seed
  // instead of the model directory's config and checkpoint; generated on the GPU by the CUDA
  // backend (no file, so a 7b model needs no 14 GB checkpoint), on the host by the CPU one. The
  // same values either way (RandomModelWeights). For benchmarks.
  std::string random_weights;
  uint64_t random_weights_seed = 0;
};

// The config a backend of these options runs: the preset's with random weights, else the model
// directory's config.json.
absl::StatusOr<ModelConfig> BackendConfig(const std::string& model_dir, const BackendOptions& options);

struct Backend {
  std::unique_ptr<ModelRunner> runner;
  std::string note;  // why this backend (for the log)
};

absl::StatusOr<Backend> MakeBackend(const std::string& model_dir, const BackendOptions& options);

}  // namespace nsa
