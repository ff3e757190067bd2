// NSA attention for one query position and one KV group, in plain float32: the executable form of
// nsa-spec.md section 1 that every faster kernel is tested against.
//
//   o[h] = g_cmp[h] * Attn(q[h], K_cmp, V_cmp)     compressed: summaries 0 .. N_cmp(t+1)-1
//        + g_slc[h] * Attn(q[h], K_slc, V_slc)     selected: tokens of the chosen l'-blocks, <= t
//        + g_win[h] * Attn(q[h], K_win, V_win)     window: tokens max(0, t-w+1) .. t
//
// Keys and values are read through RowSource, which addresses row i of a contiguous array or of
// fixed-size pages through a page table; the same code therefore serves both cache layouts.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/nsa_params.h"

namespace nsa::ref {

// Row i of a matrix whose rows may live in pages (r = i + row_offset):
//   page_table == nullptr: base + r * row_stride
//   otherwise:             base + page_table[r / page_rows] * page_stride + (r % page_rows) * row_stride
// Views over caches the model writes hand out rows through Mutable(); the storage is theirs.
struct RowSource {
  const float* base = nullptr;
  int64_t row_stride = 0;
  const int32_t* page_table = nullptr;
  int64_t page_rows = 0;
  int64_t page_stride = 0;
  int64_t row_offset = 0;

  const float* Row(int64_t i) const {
    const int64_t r = i + row_offset;
    if (page_table == nullptr) return base + r * row_stride;
    return base + page_table[r / page_rows] * page_stride + (r % page_rows) * row_stride;
  }
  float* Mutable(int64_t i) const { return const_cast<float*>(Row(i)); }
};

// Keys and values of one KV head for the three branches. With shared K/V, sel and win are the same
// rows; cmp always holds the summaries.
struct NsaKvHead {
  RowSource k_cmp, v_cmp;  // [N_cmp][head_dim], [N_cmp][v_head_dim]
  RowSource k_sel, v_sel;  // [t+1][head_dim], [t+1][v_head_dim]
  RowSource k_win, v_win;  // same shapes as sel
};

struct NsaDims {
  int group_size;  // G query heads per KV head
  int head_dim;
  int v_head_dim;
  float scale;  // softmax scale, 1/sqrt(head_dim)
};

// Softmax attention of q over rows[0..n) of keys/values. Writes out[v_dim] (zeros when n == 0) and,
// if probs != nullptr, the n probabilities. Returns the log-sum-exp of the scaled scores (-inf
// when n == 0), which is what a split-K kernel merges by.
float AttendRows(const float* q, int head_dim, float scale, const RowSource& keys, const RowSource& values,
                 int v_dim, std::span<const int64_t> rows, float* out, float* probs = nullptr);

// Selection-block scores of one group: score[j], j in [0, c], summed over the G heads of
// p_slc[h][j] = sum_i w(i, j) p_cmp[h][i]. p_cmp: [G][num_cmp].
std::vector<float> SelectionScores(const NsaParams& params, const float* p_cmp, int group_size, int64_t num_cmp,
                                   int64_t current_block);

// The selected blocks for current block c, ascending: forced init and local blocks, then the
// highest scores (ties to the lower index), n in all; every block when c + 1 <= n.
std::vector<int64_t> SelectBlocks(const NsaParams& params, std::span<const float> scores, int64_t current_block);

// Full NSA output of the G heads of one group at position t.
//   q: [G][head_dim] rotated; gates: [G][3] after the sigmoid; out: [G][v_head_dim].
//   selected (optional) receives the chosen blocks.
void NsaAttendGroup(const NsaParams& params, const NsaDims& dims, const float* q, const float* gates, int64_t t,
                    const NsaKvHead& kv, float* out, std::vector<int64_t>* selected = nullptr);

// Summary of compressed block `block` from the raw rows [block*d, block*d + l) of one KV head.
//   mean:   out = mean of the rows.
//   linear: out = concat_j(row_j + pe[j]) @ w, w: [l*dim][out_dim], pe: [l][dim] or nullptr.
void CompressMean(const RowSource& rows, int64_t first_row, int l, int dim, float* out);
void CompressLinear(const RowSource& rows, int64_t first_row, int l, int dim, const float* pe, const float* w,
                    int out_dim, float* out);

}  // namespace nsa::ref
