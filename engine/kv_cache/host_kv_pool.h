// The CPU backend's page storage: num_pages pages of KvLayout::page_elems floats in host memory,
// addressed by the page ids the KvCacheManager hands out.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/kv_cache/kv_cache_manager.h"
#include "kernels/kv_layout.h"
#include "models/config.h"
#include "models/kv_store.h"

namespace nsa {

class HostKvPool {
 public:
  HostKvPool(const ModelConfig& config, int32_t num_pages);
  // Pages that fit in `bytes` of float storage for this model.
  static int32_t PagesForBytes(const ModelConfig& config, int64_t bytes);

  const KvLayout& layout() const { return layout_; }
  int32_t num_pages() const { return num_pages_; }
  // Carries out a step's copy-on-write plan.
  void ApplyCopies(std::span<const PageCopy> copies);
  // A store over one sequence's pages; valid while the tables are.
  PagedKvStore Store(const PageTables& tables, int64_t num_tokens) {
    return PagedKvStore(storage_.data(), layout_, &tables.raw, &tables.win, &tables.src, num_tokens);
  }

 private:
  KvLayout layout_;
  int32_t num_pages_;
  std::vector<float> storage_;
};

}  // namespace nsa
