#include "engine/kv_cache/host_kv_pool.h"

#include <algorithm>

namespace nsa {

namespace {
KvLayout LayoutOf(const ModelConfig& c) {
  return KvLayout::Make(c.num_layers, c.num_kv_heads, c.head_dim, c.v_head_dim, c.nsa);
}
}  // namespace

HostKvPool::HostKvPool(const ModelConfig& config, int32_t num_pages)
    : layout_(LayoutOf(config)), num_pages_(num_pages), storage_(static_cast<size_t>(num_pages) * layout_.page_elems) {}

int32_t HostKvPool::PagesForBytes(const ModelConfig& config, int64_t bytes) {
  const int64_t page_bytes = LayoutOf(config).page_elems * static_cast<int64_t>(sizeof(float));
  return static_cast<int32_t>(std::min<int64_t>(bytes / page_bytes, INT32_MAX));
}

void HostKvPool::ApplyCopies(std::span<const PageCopy> copies) {
  for (const PageCopy& c : copies) {
    const float* src = storage_.data() + c.src * layout_.page_elems;
    std::copy(src, src + layout_.page_elems, storage_.data() + c.dst * layout_.page_elems);
  }
}

}  // namespace nsa
