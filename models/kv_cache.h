// What the CPU reference keeps per sequence and layer (nsa-spec.md section 3), in contiguous
// arrays indexed by token. The paged cache replaces the storage; the contents stay the same.
//
//   sel_k/sel_v   rotated keys/values of every token: the selection branch (and, when K/V are
//                 shared, the window branch)
//   win_k/win_v   per_branch only: the window branch's own rotated keys/values
//   src_k/src_v   compression inputs when they differ from sel: per_branch keys/values, or the
//                 un-rotated keys that linear compression reads
//   cmp_k/cmp_v   summaries, entry i written when token i*d + l - 1 is appended
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/reference/nsa_attention.h"
#include "models/config.h"

namespace nsa {

struct LayerCache {
  std::vector<float> sel_k, sel_v, win_k, win_v, src_k, src_v, cmp_k, cmp_v;
};

class KvCache {
 public:
  explicit KvCache(const ModelConfig& config);
  int64_t num_tokens() const { return num_tokens_; }
  int64_t num_summaries() const { return config_->nsa.NumCompressed(num_tokens_); }
  LayerCache& layer(int i) { return layers_[i]; }
  const LayerCache& layer(int i) const { return layers_[i]; }
  // Called once per forward pass after every layer appended its new tokens.
  void Commit(int64_t new_tokens) { num_tokens_ += new_tokens; }

  // Row views of one KV head for the attention kernels.
  ref::NsaKvHead Head(int layer, int kv_head) const;
  ref::RowSource CompressionKeys(int layer, int kv_head) const;
  ref::RowSource CompressionValues(int layer, int kv_head) const;

 private:
  const ModelConfig* config_;
  std::vector<LayerCache> layers_;
  int64_t num_tokens_ = 0;
};

}  // namespace nsa
