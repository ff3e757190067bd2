#include "kernels/reference/nsa_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "kernels/reference/ops.h"

namespace nsa::ref {

float AttendRows(const float* q, int head_dim, float scale, const RowSource& keys, const RowSource& values,
                 int v_dim, std::span<const int64_t> rows, float* out, float* probs) {
  std::fill(out, out + v_dim, 0.0f);
  if (rows.empty()) return -std::numeric_limits<float>::infinity();
  std::vector<float> s(rows.size());
  float max_s = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < rows.size(); ++i) {
    s[i] = scale * Dot(q, keys.Row(rows[i]), head_dim);
    max_s = std::max(max_s, s[i]);
  }
  float sum = 0.0f;
  for (float& x : s) {
    x = std::exp(x - max_s);
    sum += x;
  }
  const float inv = 1.0f / sum;
  for (size_t i = 0; i < rows.size(); ++i) {
    const float p = s[i] * inv;
    if (probs != nullptr) probs[i] = p;
    const float* v = values.Row(rows[i]);
    for (int c = 0; c < v_dim; ++c) out[c] += p * v[c];
  }
  return max_s + std::log(sum);
}

std::vector<float> SelectionScores(const NsaParams& params, const float* p_cmp, int group_size, int64_t num_cmp,
                                   int64_t current_block) {
  std::vector<float> score(current_block + 1, 0.0f);
  const int64_t chunks_per_cmp = params.compress_block / params.compress_stride;
  const int64_t chunks_per_sel = params.select_block / params.compress_stride;
  for (int h = 0; h < group_size; ++h) {
    const float* p = p_cmp + h * num_cmp;
    for (int64_t i = 0; i < num_cmp; ++i) {
      // Compressed block i spans chunks [i, i + l/d): only the selection blocks over those chunks.
      const int64_t j_lo = i / chunks_per_sel;
      const int64_t j_hi = std::min<int64_t>((i + chunks_per_cmp - 1) / chunks_per_sel, current_block);
      for (int64_t j = j_lo; j <= j_hi; ++j) score[j] += params.GeometricWeight(i, j) * p[i];
    }
  }
  return score;
}

std::vector<int64_t> SelectBlocks(const NsaParams& params, std::span<const float> scores, int64_t current_block) {
  const int64_t num_blocks = current_block + 1;
  std::vector<int64_t> chosen;
  if (num_blocks <= params.num_selected) {
    chosen.resize(num_blocks);
    std::iota(chosen.begin(), chosen.end(), 0);
    return chosen;
  }
  std::vector<char> taken(num_blocks, 0);
  auto take = [&](int64_t j) {
    if (j >= 0 && j < num_blocks && !taken[j]) {
      taken[j] = 1;
      chosen.push_back(j);
    }
  };
  for (int64_t j = 0; j < params.init_blocks; ++j) take(j);
  for (int64_t j = current_block - params.local_blocks + 1; j <= current_block; ++j) take(j);
  std::vector<int64_t> rest;
  for (int64_t j = 0; j < num_blocks; ++j) {
    if (!taken[j]) rest.push_back(j);
  }
  const size_t want = std::min<size_t>(rest.size(), params.num_selected - chosen.size());
  std::partial_sort(rest.begin(), rest.begin() + want, rest.end(), [&](int64_t a, int64_t b) {
    return scores[a] != scores[b] ? scores[a] > scores[b] : a < b;
  });
  chosen.insert(chosen.end(), rest.begin(), rest.begin() + want);
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

void NsaAttendGroup(const NsaParams& params, const NsaDims& dims, const float* q, const float* gates, int64_t t,
                    const NsaKvHead& kv, float* out, std::vector<int64_t>* selected) {
  const int G = dims.group_size;
  const int64_t num_cmp = params.NumCompressed(t + 1);
  const int64_t current_block = t / params.select_block;

  // Compressed branch, keeping each head's probabilities for the block scores.
  std::vector<int64_t> cmp_rows(num_cmp);
  std::iota(cmp_rows.begin(), cmp_rows.end(), 0);
  std::vector<float> p_cmp(static_cast<size_t>(G) * num_cmp);
  std::vector<float> o_cmp(static_cast<size_t>(G) * dims.v_head_dim);
  for (int h = 0; h < G; ++h) {
    AttendRows(q + h * dims.head_dim, dims.head_dim, dims.scale, kv.k_cmp, kv.v_cmp, dims.v_head_dim, cmp_rows,
               o_cmp.data() + h * dims.v_head_dim, p_cmp.data() + h * num_cmp);
  }

  // Selected branch: one softmax over every token of the chosen blocks, masked beyond t.
  std::vector<float> scores = SelectionScores(params, p_cmp.data(), G, num_cmp, current_block);
  std::vector<int64_t> blocks = SelectBlocks(params, scores, current_block);
  std::vector<int64_t> sel_rows;
  for (int64_t j : blocks) {
    const int64_t end = std::min<int64_t>((j + 1) * params.select_block, t + 1);
    for (int64_t r = j * params.select_block; r < end; ++r) sel_rows.push_back(r);
  }
  if (selected != nullptr) *selected = blocks;

  // Window branch: the last w tokens, t included.
  std::vector<int64_t> win_rows;
  for (int64_t r = std::max<int64_t>(0, t - params.window + 1); r <= t; ++r) win_rows.push_back(r);

  std::vector<float> o_sel(dims.v_head_dim), o_win(dims.v_head_dim);
  for (int h = 0; h < G; ++h) {
    const float* qh = q + h * dims.head_dim;
    AttendRows(qh, dims.head_dim, dims.scale, kv.k_sel, kv.v_sel, dims.v_head_dim, sel_rows, o_sel.data());
    AttendRows(qh, dims.head_dim, dims.scale, kv.k_win, kv.v_win, dims.v_head_dim, win_rows, o_win.data());
    const float* g = gates + 3 * h;
    float* oh = out + h * dims.v_head_dim;
    const float* oc = o_cmp.data() + h * dims.v_head_dim;
    for (int c = 0; c < dims.v_head_dim; ++c) oh[c] = g[0] * oc[c] + g[1] * o_sel[c] + g[2] * o_win[c];
  }
}

void CompressMean(const RowSource& rows, int64_t first_row, int l, int dim, float* out) {
  std::fill(out, out + dim, 0.0f);
  for (int j = 0; j < l; ++j) {
    const float* r = rows.Row(first_row + j);
    for (int c = 0; c < dim; ++c) out[c] += r[c];
  }
  const float inv = 1.0f / l;
  for (int c = 0; c < dim; ++c) out[c] *= inv;
}

void CompressLinear(const RowSource& rows, int64_t first_row, int l, int dim, const float* pe, const float* w,
                    int out_dim, float* out) {
  std::fill(out, out + out_dim, 0.0f);
  for (int j = 0; j < l; ++j) {
    const float* r = rows.Row(first_row + j);
    for (int e = 0; e < dim; ++e) {
      const float x = r[e] + (pe != nullptr ? pe[j * dim + e] : 0.0f);
      const float* wrow = w + (static_cast<int64_t>(j) * dim + e) * out_dim;
      for (int c = 0; c < out_dim; ++c) out[c] += x * wrow[c];
    }
  }
}

}  // namespace nsa::ref
