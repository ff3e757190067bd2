// Where the paged KV cache keeps each value: one description of shapes and strides shared by the
// CPU backend (float pages in host memory) and the CUDA backend (bf16 pages in one device
// allocation). Offsets are in elements; each backend multiplies by its element size.
//
// Every page holds l' (= select_block) consecutive tokens of one sequence for every layer, and
// is one of three kinds. Per layer (layer stride `layer_elems`, the same for every kind):
//
//   raw page   sel [kv_heads][ K: l' x head_dim | V: l' x v_head_dim ]   selection (and, shared
//              cmp [kv_heads][ K: E x head_dim  | V: E x v_head_dim  ]   K/V, window) + summaries
//   win page   win [kv_heads][ K | V ]      per_branch: the window branch's K/V (a ring of pages)
//   src page   src [kv_heads][ K | V ]      compression inputs when they are not sel: per_branch
//                                           K/V, or linear's un-rotated keys (K only); a ring
//
// A sequence's raw page j is its selection block j, and a selected block of one KV head is one
// contiguous run of reads (K then V). Summary i (the compressed block ending at token
// e = i*d + l - 1) lives in the raw page holding token e, at slot (e mod l') / d, E = l'/d slots
// per page: a raw page shared through the prefix cache carries the summaries that end in it.
// With s = l/d - 1, summary i is "row" i + s of a table of E rows per page.
//
// Window and source pages are rings: a sequence holds only the pages its next queries and
// summaries can read (the last w and l tokens), so per-branch models cost about one raw page
// per l' tokens, not three.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/common/host_device.h"

#include "kernels/nsa_params.h"

namespace nsa {

enum class KvPlane { kSel, kWin, kSrc, kCmp };

struct KvLayout {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int v_head_dim = 0;
  int page_tokens = 0;  // l'
  int summaries_per_page = 0;  // E = l'/d
  int summary_row_shift = 0;  // s = l/d - 1
  bool has_win = false;
  bool has_src_k = false;
  bool has_src_v = false;

  // Derived strides, in elements.
  int64_t sel_head = 0, src_head = 0, cmp_head = 0;  // one KV head's block within a plane
  int64_t cmp_offset = 0;  // summaries start within a raw page's layer
  int64_t layer_elems = 0, page_elems = 0;

  static KvLayout Make(int num_layers, int num_kv_heads, int head_dim, int v_head_dim, const NsaParams& p) {
    KvLayout L;
    L.num_layers = num_layers, L.num_kv_heads = num_kv_heads, L.head_dim = head_dim, L.v_head_dim = v_head_dim;
    L.page_tokens = p.select_block;
    L.summaries_per_page = p.select_block / p.compress_stride;
    L.summary_row_shift = p.compress_block / p.compress_stride - 1;
    const bool per_branch = p.kv_sharing == KvSharing::kPerBranch;
    L.has_win = per_branch;
    L.has_src_k = per_branch || p.compress_fn == CompressFn::kLinear;
    L.has_src_v = per_branch;
    const int64_t t = L.page_tokens;
    L.sel_head = t * (head_dim + v_head_dim);
    L.src_head = t * ((L.has_src_k ? head_dim : 0) + (L.has_src_v ? v_head_dim : 0));
    L.cmp_head = int64_t{L.summaries_per_page} * (head_dim + v_head_dim);
    L.cmp_offset = num_kv_heads * L.sel_head;
    // Window and source pages fit in a raw page's footprint (src_head <= sel_head).
    L.layer_elems = L.cmp_offset + num_kv_heads * L.cmp_head;
    L.page_elems = num_layers * L.layer_elems;
    return L;
  }

  // Offset of the K rows (value = false) or V rows (value = true) of (plane, layer, head) in
  // page 0 of the plane's kind; add page * page_elems for another page. Rows within a page are
  // consecutive.
  NSA_HOST_DEVICE int64_t Offset(KvPlane plane, int layer, int head, bool value) const {
    const int64_t base = int64_t{layer} * layer_elems;
    switch (plane) {
      case KvPlane::kSel:
      case KvPlane::kWin:
        return base + head * sel_head + (value ? int64_t{page_tokens} * head_dim : 0);
      case KvPlane::kSrc:
        return base + head * src_head + (value && has_src_k ? int64_t{page_tokens} * head_dim : 0);
      case KvPlane::kCmp:
        return base + cmp_offset + head * cmp_head + (value ? int64_t{summaries_per_page} * head_dim : 0);
    }
    return 0;
  }
  // Rows per page of a plane: tokens, or summaries for kCmp.
  NSA_HOST_DEVICE int RowsPerPage(KvPlane plane) const { return plane == KvPlane::kCmp ? summaries_per_page : page_tokens; }
};

}  // namespace nsa
