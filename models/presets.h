// Named model shapes (targets.md) and writing a model directory with random weights that are a
// pure function of (preset, seed): the same seed gives the same bytes on every machine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/config.h"
#include "models/safetensors.h"
#include "models/weights.h"

namespace nsa {

// tiny, tiny-paper, fla-340m, 1.3b, 7b, paper.
std::vector<std::string> PresetNames();
absl::StatusOr<ModelConfig> PresetConfig(const std::string& name);

struct RandomModelOptions {
  uint64_t seed = 0;
  DType dtype = DType::kBF16;
  size_t max_shard_bytes = size_t{5} << 30;
  bool progress = true;
};

// Writes config.json, generation_config.json, tokenizer_config.json and the safetensors of a
// random model into `dir` (created if missing). The tokenizer is written separately.
absl::Status WriteRandomModel(const ModelConfig& config, const std::string& dir, const RandomModelOptions& options);

// The deterministic value of element `index` of tensor `name` for `seed`, before dtype rounding.
float RandomWeight(uint64_t seed, uint64_t name_hash, int64_t index, float mean, float std);
uint64_t HashName(const std::string& name);

// The weights WriteRandomModel would write for (config, seed, dtype), as the CPU model loads them
// (float32 holding values rounded to dtype), without a checkpoint: for tests against the GPU's
// own random weights (kernels/cuda/model_ops.h LaunchRandomBf16).
ModelWeights RandomModelWeights(const ModelConfig& config, uint64_t seed, DType dtype);

}  // namespace nsa
