// The NSA transformer on the CPU in float32: the readable reference every faster path is tested
// against, and the CPU backend's model. One forward pass runs a chunk of new tokens of one
// sequence (a whole prompt, a prefill chunk, or one decode token) over its KvStore (contiguous or paged).
//
// Per layer (nsa-spec.md section 4):
//   h = RMSNorm(x); q, k, v, gates = projections of h; RoPE on q and k
//   append k, v (and per-branch K/V) to the cache; write the summaries of blocks that complete
//   o = NSA attention per query and KV group; x += o_proj(o)
//   x += down(silu(gate(RMSNorm(x))) * up(RMSNorm(x)))
// Thread safety: const methods may run concurrently on different caches.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/config.h"
#include "models/kv_store.h"
#include "models/weights.h"

namespace nsa {

class NsaModel {
 public:
  NsaModel(ModelConfig config, ModelWeights weights);
  static absl::StatusOr<std::unique_ptr<NsaModel>> Load(const std::string& dir, bool progress);

  const ModelConfig& config() const { return config_; }
  // Rounds to bf16 where the CUDA backend holds bf16 (GEMM inputs: normed activations, the
  // attention output and the SwiGLU product; q; every K/V row and summary in the cache), so the
  // GPU can be held to this model tightly: with float32 everywhere, a block-score near-tie that
  // bf16 rounding flips changes a selected block and a logit row by percents. Off by default.
  void set_bf16_activations(bool on) { bf16_activations_ = on; }
  ContiguousKvStore NewCache() const { return ContiguousKvStore(config_); }

  // Appends `tokens` at positions store.num_tokens() onwards and returns the logits of the
  // last one ([vocab]); with all_logits, the logits of every new token ([tokens][vocab]). With
  // want_logits false (a prefill chunk that samples nothing) the LM head is skipped and the
  // result is empty.
  std::vector<float> Forward(std::span<const int> tokens, KvStore& store, std::vector<float>* all_logits = nullptr,
                             bool want_logits = true) const;

 private:
  void Attention(int layer, const float* h, int num_new, KvStore& store, float* out) const;
  void Round(float* x, int64_t n) const;
  void Round(std::vector<float>& x) const { Round(x.data(), static_cast<int64_t>(x.size())); }
  ModelConfig config_;
  ModelWeights weights_;
  bool bf16_activations_ = false;
};

}  // namespace nsa
