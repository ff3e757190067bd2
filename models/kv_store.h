// One sequence's K/V as the model reads and writes it (nsa-spec.md section 3). Two stores:
//
//   ContiguousKvStore  growable arrays [token][kv_head][dim]: the plain reference
//   PagedKvStore       a view of pages in a pool (layout: kernels/kv_layout.h) through the
//                      sequence's page table; the pages belong to the cache manager
//
// The model computes identical values through either; tests hold them to the bit.
// Not thread-safe: one forward pass at a time per store.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/kv_layout.h"
#include "kernels/reference/nsa_attention.h"
#include "models/config.h"

namespace nsa {

class KvStore {
 public:
  virtual ~KvStore() = default;
  // Tokens whose K/V are in the store.
  virtual int64_t num_tokens() const = 0;
  // Makes rows for tokens [num_tokens, num_tokens + n) and their summaries addressable.
  virtual void Prepare(int64_t n) = 0;
  // The n prepared tokens are written.
  virtual void Commit(int64_t n) = 0;
  // K (value = false) or V rows of one plane for (layer, kv head). kWin and kSrc exist only when
  // the layout has them.
  virtual ref::RowSource Rows(KvPlane plane, int layer, int head, bool value) const = 0;
};

// The three branches' views of one KV head, and the compression inputs, for a model config.
ref::NsaKvHead HeadView(const KvStore& store, const ModelConfig& config, int layer, int head);
ref::RowSource CompressionInput(const KvStore& store, const ModelConfig& config, int layer, int head, bool value);

class ContiguousKvStore : public KvStore {
 public:
  explicit ContiguousKvStore(const ModelConfig& config);
  int64_t num_tokens() const override { return num_tokens_; }
  int64_t num_summaries() const { return config_->nsa.NumCompressed(num_tokens_); }
  void Prepare(int64_t n) override;
  void Commit(int64_t n) override { num_tokens_ += n; }
  ref::RowSource Rows(KvPlane plane, int layer, int head, bool value) const override;

 private:
  const ModelConfig* config_;
  KvLayout layout_;
  // [layer][plane][K=0/V=1] -> rows x kv_heads x dim
  std::vector<std::vector<float>> data_;
  int64_t num_tokens_ = 0;
  std::vector<float>& Array(int layer, KvPlane plane, bool value) {
    return data_[(size_t(layer) * 4 + size_t(plane)) * 2 + value];
  }
  const std::vector<float>& Array(int layer, KvPlane plane, bool value) const {
    return data_[(size_t(layer) * 4 + size_t(plane)) * 2 + value];
  }
};

class PagedKvStore : public KvStore {
 public:
  // `storage` holds the pool's pages (page_elems floats each). The tables map the sequence's
  // logical pages to pool pages: raw pages (selection K/V and summaries), and the window and
  // source rings where the layout has them (-1 = released). The raw table must cover every
  // token Prepare is asked for.
  PagedKvStore(float* storage, const KvLayout& layout, const std::vector<int32_t>* raw, const std::vector<int32_t>* win,
               const std::vector<int32_t>* src, int64_t num_tokens);
  int64_t num_tokens() const override { return num_tokens_; }
  void Prepare(int64_t n) override;
  void Commit(int64_t n) override { num_tokens_ += n; }
  ref::RowSource Rows(KvPlane plane, int layer, int head, bool value) const override;

 private:
  float* storage_;
  const KvLayout* layout_;
  const std::vector<int32_t>* raw_;
  const std::vector<int32_t>* win_;
  const std::vector<int32_t>* src_;
  int64_t num_tokens_;
};

}  // namespace nsa
