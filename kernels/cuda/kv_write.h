// Writing the paged cache on the GPU (layout: kernels/kv_layout.h, bf16):
//   LaunchKvWrite       new tokens' K/V (and per-branch window / compression-input rows) into their
//                       pages: grid (tokens, KV heads), 16-byte copies
//   LaunchSummaries     the summaries of compressed blocks that complete, into the raw page of
//                       their last token: mean (fla) or linear with intra-block position
//                       encoding and RoPE at the block's start (the paper); grid (summaries, KV heads)
// CPU twins: the model's own writes through PagedKvStore, ref::CompressMean, ref::CompressLinear,
// ref::ApplyRope. tests/gpu/kv_write_test.cu holds them together.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/kv_layout.h"
#include "kernels/nsa_params.h"

namespace nsa::cuda {

struct KvWriteArgs {
  KvLayout layout;
  int layer = 0;
  int num_tokens = 0;
  const int32_t* token_seq = nullptr;  // [num_tokens]: which sequence (row of the tables); -1 skips
  const int64_t* token_pos = nullptr;  // [num_tokens]: its position
  const int32_t* raw_tables = nullptr;  // [sequences][max_pages]
  const int32_t* win_tables = nullptr;  // per_branch, else null
  const int32_t* src_tables = nullptr;  // when the layout has compression inputs, else null
  int max_pages = 0;
  // [num_tokens][kv_heads][dim] rows; the optional ones may be null when the layout lacks them.
  const __nv_bfloat16 *k = nullptr, *v = nullptr;  // rotated: the selection plane
  const __nv_bfloat16 *k_win = nullptr, *v_win = nullptr;
  const __nv_bfloat16 *k_src = nullptr, *v_src = nullptr;
  __nv_bfloat16* pages = nullptr;
};
cudaError_t LaunchKvWrite(const KvWriteArgs& args, cudaStream_t stream);

#ifdef __CUDACC__
// Where token i's row of (plane, KV head, K or V) goes in the pages, through `tables` (one of
// a's); null for a padding token (token_seq -1). LaunchKvWrite's addressing, and QkvSplit's when
// it writes the rows into the pages itself (QkvSplitArgs::cache).
__device__ __forceinline__ __nv_bfloat16* KvRowInPages(const KvWriteArgs& a, int i, const int32_t* tables, KvPlane plane,
                                                       int head, bool value) {
  const int64_t seq = a.token_seq[i];
  if (seq < 0) return nullptr;
  const KvLayout& L = a.layout;
  const int64_t t = a.token_pos[i];
  const int64_t page = tables[seq * a.max_pages + t / L.page_tokens];
  return a.pages + page * L.page_elems + L.Offset(plane, a.layer, head, value) + (t % L.page_tokens) * (value ? L.v_head_dim : L.head_dim);
}
#endif

struct SummaryArgs {
  KvLayout layout;
  NsaParams nsa;
  int layer = 0;
  double rope_theta = 10000.0;
  int num_summaries = 0;
  const int32_t* summary_seq = nullptr;  // [num_summaries]; -1 skips
  const int64_t* summary_index = nullptr;  // [num_summaries]: compressed block i
  const int32_t* raw_tables = nullptr;
  const int32_t* src_tables = nullptr;  // compression inputs, when the layout has them
  int max_pages = 0;
  // linear only: per KV head [l][hd] position encoding and [l*dim][dim] weights.
  const float* intra_block_pe = nullptr;
  const __nv_bfloat16* compress_key = nullptr;
  const __nv_bfloat16* compress_value = nullptr;
  __nv_bfloat16* pages = nullptr;
};
cudaError_t LaunchSummaries(const SummaryArgs& args, cudaStream_t stream);

}  // namespace nsa::cuda
