// The tensors an NSA model has (names and shapes from its config, fla-org's naming), and loading
// them from a model directory into float32 for the CPU reference.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/config.h"

namespace nsa {

struct LayerWeights {
  std::vector<float> attn_norm;  // [H]
  std::vector<float> q_proj, k_proj, v_proj;  // [nh*hd, H], [kvh*hd, H], [kvh*vhd, H]
  std::vector<float> q_bias, k_bias, v_bias;  // empty unless qkv_bias
  std::vector<float> g_proj;  // [3*nh, H]
  std::vector<float> o_proj;  // [H, nh*vhd]
  std::vector<float> k_cmp_proj, v_cmp_proj, k_win_proj, v_win_proj;  // per_branch only
  std::vector<float> compress_key, intra_block_pe, compress_value;  // linear only
  std::vector<float> mlp_norm;  // [H]
  std::vector<float> gate_proj, up_proj, down_proj;  // [M, H], [M, H], [H, M]
};

struct ModelWeights {
  std::vector<float> embeddings;  // [V, H]
  std::vector<float> norm;  // [H]
  std::vector<float> lm_head;  // [V, H]; empty when tied to the embeddings
  std::vector<LayerWeights> layers;
  const std::vector<float>& output_matrix() const { return lm_head.empty() ? embeddings : lm_head; }
};

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  // How random weights are drawn: uniform with this mean and standard deviation.
  float init_mean = 0.0f;
  float init_std = 0.0f;
  // Where a loaded tensor goes: layers[layer].*layer_field, or the model's *model_field.
  int layer = -1;
  std::vector<float> LayerWeights::*layer_field = nullptr;
  std::vector<float> ModelWeights::*model_field = nullptr;
  int64_t NumElements() const;
};

// Every tensor the config needs, in checkpoint order: the one list the loader and the random
// model writer share.
std::vector<TensorSpec> ExpectedTensors(const ModelConfig& config);

// Reads config.json and the safetensors of `dir`; every expected tensor must be present with the
// expected shape (errors name the file and the tensor). Shows progress when `progress` is set.
absl::StatusOr<ModelWeights> LoadWeights(const std::string& dir, const ModelConfig& config, bool progress);

}  // namespace nsa
