#include "models/weights.h"

#include <cmath>
#include <functional>
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
  auto norm = [](std::string name, int64_t dim) { return TensorSpec{std::move(name), {dim}, 1.0f, 0.1f}; };

  std::vector<TensorSpec> specs;
  specs.push_back({"model.embeddings.weight", {V, H}, 0.0f, 1.0f});
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    specs.push_back(norm(p + "attn_norm.weight", H));
    specs.push_back({p + "attn.q_proj.weight", {q_dim, H}, 0.0f, fan_in(H)});
    specs.push_back({p + "attn.k_proj.weight", {k_dim, H}, 0.0f, fan_in(H)});
    specs.push_back({p + "attn.v_proj.weight", {v_dim, H}, 0.0f, fan_in(H)});
    if (c.qkv_bias) {
      specs.push_back({p + "attn.q_proj.bias", {q_dim}, 0.0f, 0.1f});
      specs.push_back({p + "attn.k_proj.bias", {k_dim}, 0.0f, 0.1f});
      specs.push_back({p + "attn.v_proj.bias", {v_dim}, 0.0f, 0.1f});
    }
    if (c.nsa.kv_sharing == KvSharing::kPerBranch) {
      specs.push_back({p + "attn.k_cmp_proj.weight", {k_dim, H}, 0.0f, fan_in(H)});
      specs.push_back({p + "attn.v_cmp_proj.weight", {v_dim, H}, 0.0f, fan_in(H)});
      specs.push_back({p + "attn.k_win_proj.weight", {k_dim, H}, 0.0f, fan_in(H)});
      specs.push_back({p + "attn.v_win_proj.weight", {v_dim, H}, 0.0f, fan_in(H)});
    }
    if (c.nsa.compress_fn == CompressFn::kLinear) {
      specs.push_back({p + "attn.compress_key", {c.num_kv_heads, l * c.head_dim, c.head_dim}, 0.0f,
                       fan_in(l * c.head_dim)});
      specs.push_back({p + "attn.intra_block_pe", {c.num_kv_heads, l, c.head_dim}, 0.0f, 0.5f});
      specs.push_back({p + "attn.compress_value", {c.num_kv_heads, l * c.v_head_dim, c.v_head_dim}, 0.0f,
                       fan_in(l * c.v_head_dim)});
    }
    specs.push_back({p + "attn.g_proj.weight", {3 * int64_t{c.num_heads}, H}, 0.0f, fan_in(H)});
    specs.push_back({p + "attn.o_proj.weight", {H, o_in}, 0.0f, fan_in(o_in)});
    specs.push_back(norm(p + "mlp_norm.weight", H));
    specs.push_back({p + "mlp.gate_proj.weight", {M, H}, 0.0f, fan_in(H)});
    specs.push_back({p + "mlp.up_proj.weight", {M, H}, 0.0f, fan_in(H)});
    specs.push_back({p + "mlp.down_proj.weight", {H, M}, 0.0f, fan_in(M)});
  }
  specs.push_back(norm("model.norm.weight", H));
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {V, H}, 0.0f, fan_in(H)});
  return specs;
}

absl::StatusOr<ModelWeights> LoadWeights(const std::string& dir, const ModelConfig& config, bool progress) {
  ASSIGN_OR_RETURN(SafetensorsSet set, SafetensorsSet::OpenDirectory(dir));
  ModelWeights w;
  w.layers.resize(config.num_layers);
  // Where each expected tensor goes.
  std::map<std::string, std::vector<float>*> slots;
  slots["model.embeddings.weight"] = &w.embeddings;
  slots["model.norm.weight"] = &w.norm;
  slots["lm_head.weight"] = &w.lm_head;
  for (int i = 0; i < config.num_layers; ++i) {
    LayerWeights& L = w.layers[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    const std::pair<const char*, std::vector<float>*> names[] = {
        {"attn_norm.weight", &L.attn_norm}, {"attn.q_proj.weight", &L.q_proj}, {"attn.k_proj.weight", &L.k_proj},
        {"attn.v_proj.weight", &L.v_proj}, {"attn.q_proj.bias", &L.q_bias}, {"attn.k_proj.bias", &L.k_bias},
        {"attn.v_proj.bias", &L.v_bias}, {"attn.g_proj.weight", &L.g_proj}, {"attn.o_proj.weight", &L.o_proj},
        {"attn.k_cmp_proj.weight", &L.k_cmp_proj}, {"attn.v_cmp_proj.weight", &L.v_cmp_proj},
        {"attn.k_win_proj.weight", &L.k_win_proj}, {"attn.v_win_proj.weight", &L.v_win_proj},
        {"attn.compress_key", &L.compress_key}, {"attn.intra_block_pe", &L.intra_block_pe},
        {"attn.compress_value", &L.compress_value}, {"mlp_norm.weight", &L.mlp_norm},
        {"mlp.gate_proj.weight", &L.gate_proj}, {"mlp.up_proj.weight", &L.up_proj},
        {"mlp.down_proj.weight", &L.down_proj}};
    for (const auto& [name, slot] : names) slots[p + name] = slot;
  }

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
    std::vector<float>* slot = slots.at(s.name);
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
