// NSA prefill attention on the GPU, for a chunk of consecutive positions of one sequence over its
// paged cache (kernels/kv_layout.h, bf16). Issue 8's kernels; bench/NOTES.md has the plan. So far:
//
//   compressed branch  every (position, head) of the chunk against the summaries it may see
//                      (summary i at position t when i < NumCompressed(t + 1)): the branch's
//                      output, normalised, and its log-sum-exp, which the selection's scores need.
//   window branch      every (position, head) against the tokens max(0, t - w + 1) .. t.
//   selected branch    every (position, head) against the tokens <= t of its position's chosen
//                      blocks (given): group-centric, the G heads of one position the rows of
//                      one tile, in one of two forms (NsaPrefillArgs::selected_form).
//   selection          every (position, KV head)'s blocks from the compressed branch's
//                      log-sum-exps: block scores (geometric map, group sum) and top-n.
//   combine            the gated sum of the three branches.
// Compressed and window are FlashAttention-2 tiles: 64 query rows (positions x the G heads of a KV head,
// consecutive) a block, a warp 16 of them (or 128 and 32: NsaPrefillArgs::branch_row_tiles),
// each row with its own visible range, 64 keys a K/V tile shared by the block's 4 warps.
//
// The CPU twin is ref::AttendRows over each branch's rows (kernels/reference/nsa_attention.h);
// tests/gpu/nsa_prefill_test.cu holds them together.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/kv_layout.h"
#include "kernels/nsa_params.h"

namespace nsa::cuda {

struct NsaPrefillArgs {
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // a multiple of 16 up to 192
  int v_head_dim = 0;  // a multiple of 16 up to 128
  int layer = 0;
  float scale = 0;
  NsaParams nsa;
  KvLayout layout;

  const __nv_bfloat16* q = nullptr;  // [num_queries][num_heads][head_dim], rotated
  int num_queries = 0;  // the chunk's positions
  int64_t first_position = 0;  // position of query 0; query r is at first_position + r
  const __nv_bfloat16* pages = nullptr;  // [num_pages][layout.page_elems]
  const int32_t* raw_table = nullptr;  // the sequence's raw pages (tokens and summaries)
  const int32_t* win_table = nullptr;  // its window pages (per-branch K/V), else null
  // The selected branch's input: [num_queries][num_kv_heads][num_selected] blocks, ascending,
  // -1 pads (as NsaDecodeArgs::selected).
  const int32_t* selection = nullptr;
  // LaunchNsaPrefillSelect's output, the same shape (from cmp_lse, the compressed branch's).
  int32_t* selection_out = nullptr;
  // How the selected branch walks the blocks (the same function every way); a thread block takes
  // 4 (position, 16-head) items. kUnion: it walks the union of their blocks, each loaded once, a
  // warp computing only its own position's (few loads when neighbours choose alike, idle warps
  // when they do not). kSplit: the items one after another, each its own blocks double-buffered,
  // the 4 warps splitting each block's tokens. kAuto: the union walk where the 4 selections'
  // union is small, else the split walk.
  enum class SelectedForm { kAuto, kSplit, kUnion };
  SelectedForm selected_form = SelectedForm::kAuto;
  // For G <= 8 in the kAuto and kUnion forms: a warp's 16 rows are the G heads of 16 / G
  // consecutive positions (packed), whose thread block walks the union of its 4 x 16 / G
  // positions' blocks, instead of one position's G heads and 16 - G rows of padding. false: padded
  // (for comparison). The split form is always padded.
  bool pack_positions = true;
  // The compressed and window branches: 16-row tiles of queries a warp, 2 (128 rows a thread
  // block: every K and V fragment serves two row tiles, at about twice the registers a thread) or
  // 1 (64 rows). Two measured faster at every shape of the prefill bench (H200: 7b 64k compressed
  // 7.3 ms against 8.6, window 7.8 against 8.9; bench/NOTES.md).
  int branch_row_tiles = 2;
  // Their K/V buffers: 2 (the next tile's copies in flight during this one's arithmetic), 1, or 0:
  // 2 where it costs no resident thread block an SM (the occupancy calculator's count), else 1.
  // Every form gives the same floats.
  int branch_stages = 0;

  // Each branch's output, normalised, [num_queries][num_heads][v_head_dim], and log-sum-exp,
  // [num_queries][num_heads] (-inf where the branch sees nothing).
  float* cmp_out = nullptr;
  float* cmp_lse = nullptr;
  float* win_out = nullptr;
  float* win_lse = nullptr;
  float* slc_out = nullptr;
  float* slc_lse = nullptr;
};

// Whether the prefill kernels take this model's attention for contexts up to max_context on the
// current device: head dims, selection sizes, and the shared memory of the selection's block
// scores at max_context. A runner prefills other shapes through the decode kernel.
bool NsaPrefillSupports(int num_heads, int num_kv_heads, int head_dim, int v_head_dim, const NsaParams& nsa,
                        const KvLayout& layout, int64_t max_context);

// Check the shapes and launch one branch.
cudaError_t LaunchNsaPrefillCompressed(const NsaPrefillArgs& args, cudaStream_t stream);
cudaError_t LaunchNsaPrefillWindow(const NsaPrefillArgs& args, cudaStream_t stream);
cudaError_t LaunchNsaPrefillSelected(const NsaPrefillArgs& args, cudaStream_t stream);

// Each (position, KV head)'s blocks from the compressed branch's log-sum-exps (run it first):
// the group's block scores, the forced blocks and the top of the rest, into selection_out.
cudaError_t LaunchNsaPrefillSelect(const NsaPrefillArgs& args, cudaStream_t stream);

// out[q][h][:] = gates[q][h][0] cmp_out + gates[q][h][1] slc_out + gates[q][h][2] win_out (gates
// after the sigmoid, the decode kernel's order), every branch's output normalised.
cudaError_t LaunchNsaPrefillCombine(const NsaPrefillArgs& args, const float* gates, float* out, cudaStream_t stream);

}  // namespace nsa::cuda
