#include "models/kv_cache.h"

namespace nsa {

KvCache::KvCache(const ModelConfig& config) : config_(&config), layers_(config.num_layers) {}

namespace {
ref::RowSource Rows(const std::vector<float>& data, int kv_head, int num_kv_heads, int dim) {
  return ref::RowSource{data.data() + int64_t{kv_head} * dim, int64_t{num_kv_heads} * dim};
}
}  // namespace

ref::NsaKvHead KvCache::Head(int layer, int kv_head) const {
  const ModelConfig& c = *config_;
  const LayerCache& L = layers_[layer];
  ref::NsaKvHead h;
  h.k_sel = Rows(L.sel_k, kv_head, c.num_kv_heads, c.head_dim);
  h.v_sel = Rows(L.sel_v, kv_head, c.num_kv_heads, c.v_head_dim);
  const bool per_branch = c.nsa.kv_sharing == KvSharing::kPerBranch;
  h.k_win = per_branch ? Rows(L.win_k, kv_head, c.num_kv_heads, c.head_dim) : h.k_sel;
  h.v_win = per_branch ? Rows(L.win_v, kv_head, c.num_kv_heads, c.v_head_dim) : h.v_sel;
  h.k_cmp = Rows(L.cmp_k, kv_head, c.num_kv_heads, c.head_dim);
  h.v_cmp = Rows(L.cmp_v, kv_head, c.num_kv_heads, c.v_head_dim);
  return h;
}

ref::RowSource KvCache::CompressionKeys(int layer, int kv_head) const {
  const ModelConfig& c = *config_;
  const LayerCache& L = layers_[layer];
  const bool own = c.nsa.kv_sharing == KvSharing::kPerBranch || c.nsa.compress_fn == CompressFn::kLinear;
  return Rows(own ? L.src_k : L.sel_k, kv_head, c.num_kv_heads, c.head_dim);
}

ref::RowSource KvCache::CompressionValues(int layer, int kv_head) const {
  const ModelConfig& c = *config_;
  const LayerCache& L = layers_[layer];
  const bool own = c.nsa.kv_sharing == KvSharing::kPerBranch;
  return Rows(own ? L.src_v : L.sel_v, kv_head, c.num_kv_heads, c.v_head_dim);
}

}  // namespace nsa
