// The CPU reference NSA attention against a brute-force evaluation of nsa-spec.md section 1,
// written independently here in double precision: masks over every token, overlaps counted
// token by token, selection by sorting every candidate. Covers each branch alone (one-hot gates),
// the boundary positions of section 6, dense equivalence, exact top-n sets and ties.
#include "kernels/reference/nsa_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "tests/test_util.h"

namespace nsa::ref {
namespace {

struct Case {
  const char* name;
  NsaParams params;
  int group_size, head_dim, v_head_dim;
  int num_tokens;
};

NsaParams Params(int l, int d, int lp, int n, int w, int init = 1, int local = 2) {
  NsaParams p;
  p.compress_block = l, p.compress_stride = d, p.select_block = lp, p.num_selected = n, p.window = w;
  p.init_blocks = init, p.local_blocks = local;
  p.score_map = (l == d && l == lp) ? ScoreMap::kIdentity : ScoreMap::kGeometric;
  return p;
}

// Random keys, values, queries and gates of one KV group; summaries are means of raw rows.
struct Inputs {
  int T, hd, vhd, G;
  std::vector<float> k, v, q, gates, k_cmp, v_cmp;  // [T][hd], [T][vhd], [T][G][hd], [T][G][3], [N][hd], [N][vhd]
};

Inputs MakeInputs(const Case& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  Inputs in{c.num_tokens, c.head_dim, c.v_head_dim, c.group_size, {}, {}, {}, {}, {}, {}};
  auto fill = [&](std::vector<float>& x, size_t n, float scale) {
    x.resize(n);
    for (float& f : x) f = scale * nd(rng);
  };
  fill(in.k, size_t(in.T) * in.hd, 1.0f);
  fill(in.v, size_t(in.T) * in.vhd, 1.0f);
  fill(in.q, size_t(in.T) * in.G * in.hd, 0.6f);
  in.gates.resize(size_t(in.T) * in.G * 3);
  for (float& g : in.gates) g = ud(rng);
  const NsaParams& p = c.params;
  const int64_t N = p.NumCompressed(in.T);
  in.k_cmp.resize(N * in.hd);
  in.v_cmp.resize(N * in.vhd);
  for (int64_t i = 0; i < N; ++i) {
    CompressMean(RowSource{in.k.data(), in.hd}, i * p.compress_stride, p.compress_block, in.hd, &in.k_cmp[i * in.hd]);
    CompressMean(RowSource{in.v.data(), in.vhd}, i * p.compress_stride, p.compress_block, in.vhd, &in.v_cmp[i * in.vhd]);
  }
  return in;
}

NsaKvHead Views(const Inputs& in) {
  NsaKvHead kv;
  kv.k_sel = kv.k_win = RowSource{in.k.data(), in.hd};
  kv.v_sel = kv.v_win = RowSource{in.v.data(), in.vhd};
  kv.k_cmp = RowSource{in.k_cmp.data(), in.hd};
  kv.v_cmp = RowSource{in.v_cmp.data(), in.vhd};
  return kv;
}

// ---- brute force, double precision ------------------------------------------------------------

// Softmax attention over the rows listed; also returns the probabilities.
std::vector<double> Attend(const float* q, const std::vector<const float*>& keys, const std::vector<const float*>& values,
                           int hd, int vhd, std::vector<double>* probs = nullptr) {
  std::vector<double> out(vhd, 0.0);
  if (keys.empty()) return out;
  std::vector<double> s(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    double dot = 0;
    for (int e = 0; e < hd; ++e) dot += double(q[e]) * keys[i][e];
    s[i] = dot / std::sqrt(double(hd));
  }
  const double m = *std::max_element(s.begin(), s.end());
  double z = 0;
  for (double& x : s) z += (x = std::exp(x - m));
  for (size_t i = 0; i < keys.size(); ++i) {
    s[i] /= z;
    for (int c = 0; c < vhd; ++c) out[c] += s[i] * values[i][c];
  }
  if (probs) *probs = s;
  return out;
}

struct Brute {
  std::vector<double> out;  // [G][vhd]
  std::vector<int64_t> blocks;
};

Brute BruteNsa(const NsaParams& p, const Inputs& in, int64_t t, const float* gates_override = nullptr) {
  const int G = in.G, hd = in.hd, vhd = in.vhd;
  const int64_t l = p.compress_block, d = p.compress_stride, lp = p.select_block;
  // Compressed blocks visible to t: those whose last token is <= t.
  std::vector<int64_t> vis;
  for (int64_t i = 0; i * d + l - 1 <= t; ++i) vis.push_back(i);
  std::vector<const float*> kc, vc;
  for (int64_t i : vis) kc.push_back(&in.k_cmp[i * hd]), vc.push_back(&in.v_cmp[i * vhd]);

  const int64_t c = t / lp;
  std::vector<double> score(c + 1, 0.0);
  std::vector<std::vector<double>> o_cmp(G);
  for (int h = 0; h < G; ++h) {
    const float* q = &in.q[(t * G + h) * hd];
    std::vector<double> pc;
    o_cmp[h] = Attend(q, kc, vc, hd, vhd, &pc);
    for (size_t a = 0; a < vis.size(); ++a) {
      for (int64_t j = 0; j <= c; ++j) {
        // Overlap counted token by token, in units of the stride.
        int64_t shared = 0;
        for (int64_t x = vis[a] * d; x < vis[a] * d + l; ++x) shared += (x >= j * lp && x < (j + 1) * lp);
        score[j] += double(shared / d) * pc[a];
      }
    }
  }
  std::vector<int64_t> chosen;
  if (c + 1 <= p.num_selected) {
    for (int64_t j = 0; j <= c; ++j) chosen.push_back(j);
  } else {
    std::set<int64_t> forced;
    for (int64_t j = 0; j < p.init_blocks && j <= c; ++j) forced.insert(j);
    for (int64_t j = std::max<int64_t>(0, c - p.local_blocks + 1); j <= c; ++j) forced.insert(j);
    std::vector<int64_t> rest;
    for (int64_t j = 0; j <= c; ++j) {
      if (!forced.count(j)) rest.push_back(j);
    }
    std::stable_sort(rest.begin(), rest.end(), [&](int64_t a, int64_t b) { return score[a] > score[b]; });
    chosen.assign(forced.begin(), forced.end());
    for (size_t k = 0; chosen.size() < size_t(p.num_selected) && k < rest.size(); ++k) chosen.push_back(rest[k]);
    std::sort(chosen.begin(), chosen.end());
  }
  std::vector<const float*> ks, vs, kw, vw;
  for (int64_t x = 0; x <= t; ++x) {
    if (std::count(chosen.begin(), chosen.end(), x / lp)) ks.push_back(&in.k[x * hd]), vs.push_back(&in.v[x * vhd]);
    if (x > t - p.window) kw.push_back(&in.k[x * hd]), vw.push_back(&in.v[x * vhd]);
  }
  Brute b;
  b.blocks = chosen;
  b.out.resize(size_t(G) * vhd);
  for (int h = 0; h < G; ++h) {
    const float* q = &in.q[(t * G + h) * hd];
    const float* g = gates_override ? gates_override : &in.gates[(t * G + h) * 3];
    auto os = Attend(q, ks, vs, hd, vhd), ow = Attend(q, kw, vw, hd, vhd);
    for (int e = 0; e < vhd; ++e) b.out[h * vhd + e] = g[0] * o_cmp[h][e] + g[1] * os[e] + g[2] * ow[e];
  }
  return b;
}

// ---- tests ------------------------------------------------------------------------------------

class NsaAttentionTest : public ::testing::TestWithParam<Case> {};

// Every position, random gates and each gate alone: all three branches and the mix.
TEST_P(NsaAttentionTest, MatchesBruteForceAtEveryPosition) {
  const Case& c = GetParam();
  const Inputs in = MakeInputs(c, 1234);
  const NsaDims dims{c.group_size, c.head_dim, c.v_head_dim, 1.0f / std::sqrt(float(c.head_dim))};
  const NsaKvHead kv = Views(in);
  const float one_hot[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
  std::vector<float> out(size_t(c.group_size) * c.v_head_dim);
  for (int64_t t = 0; t < in.T; ++t) {
    std::vector<int64_t> blocks;
    NsaAttendGroup(c.params, dims, &in.q[t * c.group_size * c.head_dim], &in.gates[t * c.group_size * 3], t, kv,
                   out.data(), &blocks);
    Brute b = BruteNsa(c.params, in, t);
    ASSERT_LE(MaxRelErr(out, b.out), 2e-5) << "t = " << t;
    ASSERT_EQ(blocks, b.blocks) << "t = " << t;
    ASSERT_LE(blocks.size(), size_t(c.params.num_selected));
    for (const auto& g : one_hot) {
      std::vector<float> gates(size_t(c.group_size) * 3);
      for (int h = 0; h < c.group_size; ++h) std::copy(g, g + 3, &gates[h * 3]);
      NsaAttendGroup(c.params, dims, &in.q[t * c.group_size * c.head_dim], gates.data(), t, kv, out.data());
      ASSERT_LE(MaxRelErr(out, BruteNsa(c.params, in, t, g).out), 2e-5) << "t = " << t << " gates " << g[0] << g[1] << g[2];
    }
  }
}

// With n*l' >= T and w >= T, the selected and the window branch are full causal attention.
TEST_P(NsaAttentionTest, DenseEquivalence) {
  Case c = GetParam();
  c.params.num_selected = (c.num_tokens + c.params.select_block - 1) / c.params.select_block;
  c.params.window = c.num_tokens;
  const Inputs in = MakeInputs(c, 99);
  const NsaDims dims{c.group_size, c.head_dim, c.v_head_dim, 1.0f / std::sqrt(float(c.head_dim))};
  std::vector<float> out(size_t(c.group_size) * c.v_head_dim);
  for (int64_t t = 0; t < in.T; t += 7) {
    std::vector<const float*> keys, values;
    for (int64_t x = 0; x <= t; ++x) keys.push_back(&in.k[x * c.head_dim]), values.push_back(&in.v[x * c.v_head_dim]);
    for (int branch : {1, 2}) {
      std::vector<float> gates(size_t(c.group_size) * 3, 0.0f);
      for (int h = 0; h < c.group_size; ++h) gates[h * 3 + branch] = 1.0f;
      NsaAttendGroup(c.params, dims, &in.q[t * c.group_size * c.head_dim], gates.data(), t, Views(in), out.data());
      std::vector<double> dense(size_t(c.group_size) * c.v_head_dim);
      for (int h = 0; h < c.group_size; ++h) {
        auto o = Attend(&in.q[(t * c.group_size + h) * c.head_dim], keys, values, c.head_dim, c.v_head_dim);
        std::copy(o.begin(), o.end(), dense.begin() + h * c.v_head_dim);
      }
      ASSERT_LE(MaxRelErr(out, dense), 2e-5) << "t = " << t << " branch " << branch;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Variants, NsaAttentionTest,
    ::testing::Values(Case{"fla_l16_G4", Params(16, 16, 16, 4, 32), 4, 32, 32, 200},
                      Case{"paper_l8_d4_lp16_G2", Params(8, 4, 16, 4, 32), 2, 48, 32, 200},
                      Case{"paper_l32_d16_lp64_G16", Params(32, 16, 64, 16, 512), 16, 64, 32, 1100},
                      Case{"mha_G1_init2_local1", Params(8, 8, 8, 5, 16, 2, 1), 1, 16, 16, 120},
                      Case{"no_forced_G3", Params(8, 8, 16, 3, 8, 0, 0), 3, 16, 8, 150}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(SelectBlocksTest, TiesGoToTheLowerIndex) {
  NsaParams p = Params(16, 16, 16, 4, 32);  // init 1, local 2: one free choice
  std::vector<float> scores = {0.0f, 0.5f, 0.9f, 0.9f, 0.9f, 0.1f, 0.2f};
  EXPECT_EQ(SelectBlocks(p, scores, 6), (std::vector<int64_t>{0, 2, 5, 6}));
  p.num_selected = 5;
  EXPECT_EQ(SelectBlocks(p, scores, 6), (std::vector<int64_t>{0, 2, 3, 5, 6}));
  std::vector<float> flat(10, 0.25f);
  EXPECT_EQ(SelectBlocks(p, flat, 9), (std::vector<int64_t>{0, 1, 2, 8, 9}));
}

TEST(SelectBlocksTest, EveryBlockWhileFewerThanN) {
  NsaParams p = Params(16, 16, 16, 4, 32);
  std::vector<float> scores = {0.1f, 0.0f, 0.3f, 0.2f};
  EXPECT_EQ(SelectBlocks(p, scores, 3), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(SelectBlocks(p, std::vector<float>{0.0f}, 0), (std::vector<int64_t>{0}));
}

TEST(AttendRowsTest, EmptySetGivesZeroAndMinusInfinity) {
  float q[4] = {1, 2, 3, 4}, out[4] = {7, 7, 7, 7};
  const float lse = AttendRows(q, 4, 0.5f, RowSource{q, 4}, RowSource{q, 4}, 4, {}, out);
  EXPECT_TRUE(std::isinf(lse) && lse < 0);
  for (float o : out) EXPECT_EQ(o, 0.0f);
}

TEST(AttendRowsTest, LogSumExpMergesSplits) {
  // Two halves merged by their log-sum-exp equal one softmax over all rows (split-K decoding).
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  const int hd = 16, n = 40;
  std::vector<float> k(n * hd), v(n * hd), q(hd);
  for (float& x : k) x = nd(rng);
  for (float& x : v) x = nd(rng);
  for (float& x : q) x = nd(rng);
  std::vector<int64_t> all(n), a(n / 2), b(n - n / 2);
  for (int i = 0; i < n; ++i) (i < n / 2 ? a[i] : b[i - n / 2]) = all[i] = i;
  std::vector<float> o(hd), oa(hd), ob(hd);
  const RowSource K{k.data(), hd}, V{v.data(), hd};
  const float lse = AttendRows(q.data(), hd, 0.25f, K, V, hd, all, o.data());
  const float la = AttendRows(q.data(), hd, 0.25f, K, V, hd, a, oa.data());
  const float lb = AttendRows(q.data(), hd, 0.25f, K, V, hd, b, ob.data());
  EXPECT_NEAR(lse, std::log(std::exp(la) + std::exp(lb)), 1e-5);
  for (int c = 0; c < hd; ++c) EXPECT_NEAR(o[c], std::exp(la - lse) * oa[c] + std::exp(lb - lse) * ob[c], 1e-5);
}

TEST(CompressTest, LinearMatchesItsFormula) {
  std::mt19937 rng(8);
  std::normal_distribution<float> nd;
  const int l = 4, dim = 6, out_dim = 5, T = 12;
  std::vector<float> rows(T * dim), pe(l * dim), w(l * dim * out_dim), out(out_dim);
  for (float& x : rows) x = nd(rng);
  for (float& x : pe) x = nd(rng);
  for (float& x : w) x = nd(rng);
  CompressLinear(RowSource{rows.data(), dim}, 5, l, dim, pe.data(), w.data(), out_dim, out.data());
  for (int c = 0; c < out_dim; ++c) {
    double want = 0;
    for (int j = 0; j < l; ++j) {
      for (int e = 0; e < dim; ++e) want += (double(rows[(5 + j) * dim + e]) + pe[j * dim + e]) * w[(j * dim + e) * out_dim + c];
    }
    EXPECT_NEAR(out[c], want, 1e-4 * (1 + std::abs(want)));
  }
}

TEST(RowSourceTest, PagedAndContiguousAddressTheSameRows) {
  // Rows 0..11 in pages of 4, stored out of order: page table {2, 0, 1}.
  const int dim = 3, page_rows = 4;
  std::vector<float> contiguous(12 * dim), paged(12 * dim);
  for (int i = 0; i < 12 * dim; ++i) contiguous[i] = float(i);
  const int32_t table[3] = {2, 0, 1};
  for (int r = 0; r < 12; ++r) {
    for (int e = 0; e < dim; ++e) paged[(table[r / page_rows] * page_rows + r % page_rows) * dim + e] = contiguous[r * dim + e];
  }
  RowSource a{contiguous.data(), dim}, b{paged.data(), dim, table, page_rows, page_rows * dim};
  for (int r = 0; r < 12; ++r) {
    for (int e = 0; e < dim; ++e) EXPECT_EQ(a.Row(r)[e], b.Row(r)[e]);
  }
}

}  // namespace
}  // namespace nsa::ref
