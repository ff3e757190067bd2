#include "models/kv_store.h"

#include "kernels/common/check.h"

namespace nsa {

ref::NsaKvHead HeadView(const KvStore& store, const ModelConfig& config, int layer, int head) {
  ref::NsaKvHead h;
  h.k_sel = store.Rows(KvPlane::kSel, layer, head, false);
  h.v_sel = store.Rows(KvPlane::kSel, layer, head, true);
  const bool per_branch = config.nsa.kv_sharing == KvSharing::kPerBranch;
  h.k_win = per_branch ? store.Rows(KvPlane::kWin, layer, head, false) : h.k_sel;
  h.v_win = per_branch ? store.Rows(KvPlane::kWin, layer, head, true) : h.v_sel;
  h.k_cmp = store.Rows(KvPlane::kCmp, layer, head, false);
  h.v_cmp = store.Rows(KvPlane::kCmp, layer, head, true);
  return h;
}

ref::RowSource CompressionInput(const KvStore& store, const ModelConfig& config, int layer, int head, bool value) {
  const bool per_branch = config.nsa.kv_sharing == KvSharing::kPerBranch;
  const bool own = per_branch || (!value && config.nsa.compress_fn == CompressFn::kLinear);
  return store.Rows(own ? KvPlane::kSrc : KvPlane::kSel, layer, head, value);
}

namespace {
int Dim(const KvLayout& L, bool value) { return value ? L.v_head_dim : L.head_dim; }
}  // namespace

ContiguousKvStore::ContiguousKvStore(const ModelConfig& config)
    : config_(&config),
      layout_(KvLayout::Make(config.num_layers, config.num_kv_heads, config.head_dim, config.v_head_dim, config.nsa)),
      data_(size_t(config.num_layers) * 8) {}

void ContiguousKvStore::Prepare(int64_t n) {
  const int64_t rows = num_tokens_ + n, summaries = config_->nsa.NumCompressed(rows);
  const int64_t kvh = layout_.num_kv_heads;
  for (int layer = 0; layer < layout_.num_layers; ++layer) {
    for (KvPlane plane : {KvPlane::kSel, KvPlane::kWin, KvPlane::kSrc, KvPlane::kCmp}) {
      for (bool value : {false, true}) {
        const bool exists = plane == KvPlane::kSel || plane == KvPlane::kCmp || (plane == KvPlane::kWin && layout_.has_win) ||
                            (plane == KvPlane::kSrc && (value ? layout_.has_src_v : layout_.has_src_k));
        if (!exists) continue;
        Array(layer, plane, value).resize((plane == KvPlane::kCmp ? summaries : rows) * kvh * Dim(layout_, value));
      }
    }
  }
}

ref::RowSource ContiguousKvStore::Rows(KvPlane plane, int layer, int head, bool value) const {
  const int dim = Dim(layout_, value);
  return ref::RowSource{Array(layer, plane, value).data() + int64_t{head} * dim, int64_t{layout_.num_kv_heads} * dim};
}

PagedKvStore::PagedKvStore(float* storage, const KvLayout& layout, const std::vector<int32_t>* raw,
                           const std::vector<int32_t>* win, const std::vector<int32_t>* src, int64_t num_tokens)
    : storage_(storage), layout_(&layout), raw_(raw), win_(win), src_(src), num_tokens_(num_tokens) {}

void PagedKvStore::Prepare(int64_t n) {
  // Pages are the cache manager's to allocate; tables that fall short are a scheduling bug.
  const int64_t pages = (num_tokens_ + n + layout_->page_tokens - 1) / layout_->page_tokens;
  NSA_CHECK(pages <= static_cast<int64_t>(raw_->size()), "raw table covers %zu pages, %lld tokens prepared", raw_->size(),
            static_cast<long long>(num_tokens_ + n));
  NSA_CHECK(!layout_->has_win || static_cast<int64_t>(win_->size()) >= pages, "window ring falls short");
  NSA_CHECK(!(layout_->has_src_k || layout_->has_src_v) || static_cast<int64_t>(src_->size()) >= pages,
            "source ring falls short");
}

ref::RowSource PagedKvStore::Rows(KvPlane plane, int layer, int head, bool value) const {
  const std::vector<int32_t>* table = plane == KvPlane::kWin ? win_ : plane == KvPlane::kSrc ? src_ : raw_;
  ref::RowSource r;
  r.base = storage_ + layout_->Offset(plane, layer, head, value);
  r.row_stride = Dim(*layout_, value);
  r.page_table = table->data();
  r.page_rows = layout_->RowsPerPage(plane);
  r.page_stride = layout_->page_elems;
  r.row_offset = plane == KvPlane::kCmp ? layout_->summary_row_shift : 0;
  return r;
}

}  // namespace nsa
