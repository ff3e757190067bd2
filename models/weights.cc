#include "models/weights.h"

#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/common/status.h"
#include "models/progress.h"
#include "models/safetensors.h"

namespace nsa {

int64_t TensorSpec::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<TensorSpec> ExpectedTensors(const ModelConfig& c) {
  const int64_t H = c.hidden_size, V = c.vocab_size, M = c.intermediate_size;
  const int64_t q_dim = int64_t{c.num_heads} * c.head_dim;
  const int64_t k_dim = int64_t{c.num_kv_heads} * c.head_dim;
  const int64_t v_dim = int64_t{c.num_kv_heads} * c.v_head_dim;
  const int64_t o_in = int64_t{c.num_heads} * c.v_head_dim;
  const int64_t l = c.nsa.compress_block;
  // Fan-in scaling keeps activations O(1) so random models exercise every softmax meaningfully.
  auto fan_in = [](int64_t n) { return 1.0f / std::sqrt(static_cast<float>(n)); };
  using LW = LayerWeights;
  using MW = ModelWeights;

  std::vector<TensorSpec> specs;
  auto model = [&](const char* name, std::vector<int64_t> shape, float mean, float std, std::vector<float> MW::*field) {
    specs.push_back({name, std::move(shape), mean, std, -1, nullptr, field});
  };
  model("model.embeddings.weight", {V, H}, 0.0f, 1.0f, &MW::embeddings);
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    auto layer = [&](const char* suffix, std::vector<int64_t> shape, float mean, float std, std::vector<float> LW::*field) {
      specs.push_back({p + suffix, std::move(shape), mean, std, i, field, nullptr});
    };
    layer("attn_norm.weight", {H}, 1.0f, 0.1f, &LW::attn_norm);
    layer("attn.q_proj.weight", {q_dim, H}, 0.0f, fan_in(H), &LW::q_proj);
    layer("attn.k_proj.weight", {k_dim, H}, 0.0f, fan_in(H), &LW::k_proj);
    layer("attn.v_proj.weight", {v_dim, H}, 0.0f, fan_in(H), &LW::v_proj);
    if (c.qkv_bias) {
      layer("attn.q_proj.bias", {q_dim}, 0.0f, 0.1f, &LW::q_bias);
      layer("attn.k_proj.bias", {k_dim}, 0.0f, 0.1f, &LW::k_bias);
      layer("attn.v_proj.bias", {v_dim}, 0.0f, 0.1f, &LW::v_bias);
    }
    if (c.nsa.kv_sharing == KvSharing::kPerBranch) {
      layer("attn.k_cmp_proj.weight", {k_dim, H}, 0.0f, fan_in(H), &LW::k_cmp_proj);
      layer("attn.v_cmp_proj.weight", {v_dim, H}, 0.0f, fan_in(H), &LW::v_cmp_proj);
      layer("attn.k_win_proj.weight", {k_dim, H}, 0.0f, fan_in(H), &LW::k_win_proj);
      layer("attn.v_win_proj.weight", {v_dim, H}, 0.0f, fan_in(H), &LW::v_win_proj);
    }
    if (c.nsa.compress_fn == CompressFn::kLinear) {
      layer("attn.compress_key", {c.num_kv_heads, l * c.head_dim, c.head_dim}, 0.0f, fan_in(l * c.head_dim),
            &LW::compress_key);
      layer("attn.intra_block_pe", {c.num_kv_heads, l, c.head_dim}, 0.0f, 0.5f, &LW::intra_block_pe);
      layer("attn.compress_value", {c.num_kv_heads, l * c.v_head_dim, c.v_head_dim}, 0.0f, fan_in(l * c.v_head_dim),
            &LW::compress_value);
    }
    layer("attn.g_proj.weight", {3 * int64_t{c.num_heads}, H}, 0.0f, fan_in(H), &LW::g_proj);
    layer("attn.o_proj.weight", {H, o_in}, 0.0f, fan_in(o_in), &LW::o_proj);
    layer("mlp_norm.weight", {H}, 1.0f, 0.1f, &LW::mlp_norm);
    layer("mlp.gate_proj.weight", {M, H}, 0.0f, fan_in(H), &LW::gate_proj);
    layer("mlp.up_proj.weight", {M, H}, 0.0f, fan_in(H), &LW::up_proj);
    layer("mlp.down_proj.weight", {H, M}, 0.0f, fan_in(M), &LW::down_proj);
  }
  model("model.norm.weight", {H}, 1.0f, 0.1f, &MW::norm);
  if (!c.tie_word_embeddings) model("lm_head.weight", {V, H}, 0.0f, fan_in(H), &MW::lm_head);
  return specs;
}

absl::StatusOr<ModelWeights> LoadWeights(const std::string& dir, const ModelConfig& config, bool progress) {
  ASSIGN_OR_RETURN(SafetensorsSet set, SafetensorsSet::OpenDirectory(dir));
  ModelWeights w;
  w.layers.resize(config.num_layers);
  const std::vector<TensorSpec> specs = ExpectedTensors(config);
  int64_t total_bytes = 0;
  for (const TensorSpec& s : specs) {
    SafetensorsSet::Entry e = set.Find(s.name);
    if (e.file == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(dir, ": tensor \"", s.name, "\" is missing (the config needs it)"));
    }
    if (e.info->shape != s.shape) {
      return absl::InvalidArgumentError(absl::StrCat(e.file->path(), ": tensor \"", s.name, "\" has shape [",
                                                     absl::StrJoin(e.info->shape, ", "), "] but the config needs [",
                                                     absl::StrJoin(s.shape, ", "), "]"));
    }
    total_bytes += e.info->end - e.info->begin;
  }
  // A tensor the config does not use means config and checkpoint disagree (biases with
  // qkv_bias false, per-branch K/V with kv_sharing shared, ...): refuse rather than ignore it.
  std::map<std::string, bool> expected;
  for (const TensorSpec& s : specs) expected[s.name] = true;
  for (const std::string& name : set.Names()) {
    const bool rotary_buffer = name.size() >= 15 && name.compare(name.size() - 15, 15, "rotary.inv_freq") == 0;
    const bool tied_head = name == "lm_head.weight" && config.tie_word_embeddings;
    if (!expected.count(name) && !rotary_buffer && !tied_head) {
      return absl::InvalidArgumentError(absl::StrCat(set.Find(name).file->path(), ": tensor \"", name,
                                                     "\" is not used by this config (check qkv_bias, kv_sharing, "
                                                     "compress_fn, tie_word_embeddings and num_hidden_layers)"));
    }
  }
  std::unique_ptr<Progress> bar;
  if (progress) bar = std::make_unique<Progress>("loading " + dir, total_bytes, Progress::Unit::kBytes);
  for (const TensorSpec& s : specs) {
    SafetensorsSet::Entry e = set.Find(s.name);
    std::vector<float>* slot = s.layer >= 0 ? &(w.layers[s.layer].*s.layer_field) : &(w.*s.model_field);
    slot->resize(s.NumElements());
    ConvertToFloat(e.info->dtype, e.file->Data(*e.info), slot->size(), slot->data());
    for (float v : *slot) {
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(absl::StrCat(e.file->path(), ": tensor \"", s.name, "\" holds NaN or Inf"));
      }
    }
    if (bar) bar->Add(e.info->end - e.info->begin);
  }
  return w;
}

}  // namespace nsa
