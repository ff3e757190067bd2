// The model's shape and NSA settings, read from a Hugging Face config.json.
//
// fla-org's NSAConfig keys load as they are; the extension keys of nsa-spec.md section 2 add the
// paper's variant. Every combination outside that table is rejected with a message naming the key.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/nsa_params.h"
#include "nlohmann/json_fwd.hpp"

namespace nsa {

struct ModelConfig {
  std::string model_type = "nsa";
  int vocab_size = 32000;
  int hidden_size = 2048;
  int num_layers = 24;
  int num_heads = 64;
  int num_kv_heads = 4;
  int head_dim = 32;
  int v_head_dim = 32;
  int intermediate_size = 0;
  bool qkv_bias = false;
  bool tie_word_embeddings = false;
  float norm_eps = 1e-6f;
  double rope_theta = 10000.0;
  int max_position_embeddings = 2048;
  int bos_token_id = 1;
  int eos_token_id = 2;
  NsaParams nsa;

  int group_size() const { return num_heads / num_kv_heads; }

  // Parses and validates; `source` names the file in error messages.
  static absl::StatusOr<ModelConfig> FromJson(const nlohmann::json& json, const std::string& source);
  static absl::StatusOr<ModelConfig> FromFile(const std::string& path);
  // The config.json this struct reads back to an equal config (extension keys only when set).
  nlohmann::json ToJson() const;
  absl::Status Validate() const;
  // A hash of every field: the prefix cache keys pages with it, so models never share pages.
  uint64_t Fingerprint() const;
};

// fla's GatedMLP width when intermediate_size is absent: 2/3 of hidden * ratio, rounded up to 256.
int FlaIntermediateSize(int hidden_size, double hidden_ratio);

}  // namespace nsa
