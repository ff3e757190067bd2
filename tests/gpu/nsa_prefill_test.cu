// The CUDA prefill attention's branches (kernels/cuda/nsa_prefill.h) against their CPU twin,
// ref::AttendRows over the rows each position may see, on fresh random inputs: a paged bf16
// cache with scrambled page ids (window pages of their own for per-branch K/V), chunks of
// positions starting anywhere (the start of a sequence, where early rows see no summary; across
// 64k; at 128k), G from 1 to 64, head dims 32 to 192 (values 32 to 128), the fla default and the
// paper's overlapping compression, and the tiny presets; the second of two layers.
// Outputs within 1e-2 relative: the kernel rounds softmax weights to bf16 for the P.V product,
// which an emulation of its arithmetic on these inputs put at up to 3.9e-3, while dropping one
// visible summary gives 2.7e-2 and more. Log-sum-exps within 2e-4 (emulated: 2.4e-6; a dropped
// token moves one by about 1e-3). The selection kernel, after the compressed branch, against
// ref::SelectionScores and SelectBlocks: the same block sets up to near ties (CheckSelection).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cuda/nsa_prefill.h"
#include "kernels/reference/nsa_attention.h"
#include "tests/gpu/cuda_check.h"

namespace nsa {
namespace {

struct Case {
  const char* name;
  int num_heads, num_kv_heads, head_dim, v_head_dim;
  int l, d, lp, w, n;
  bool per_branch;
  int64_t first_position;
  int num_queries;
};

// kSelected runs the selected branch's default form (NsaPrefillArgs::selected_form: each thread
// block's walk picked from its selections' overlap), kSelectedSplit and kSelectedUnion one walk
// for every block; for G <= 8 the default and union forms pack 16 / G positions a warp, and
// kSelectedPadded is the union walk without packing (pack_positions = false). kCompressed2 and
// kWindow2: those branches with two 16-row tiles a warp (branch_row_tiles = 2) and two K/V
// buffers (branch_stages = 2), each also run with one buffer (the same floats required).
enum class Branch {
  kCompressed, kWindow, kCompressed2, kWindow2, kSelected, kSelectedSplit, kSelectedUnion, kSelectedPadded, kSelection
};

// A selection for each (query, KV head) of the chunk, as the decode kernel's `selected`: every
// block when there are at most n, else the first and the last two plus random others, ascending
// with -1 pads. Not the scores' choice: the selected branch takes whatever it is given.
std::vector<int32_t> RandomSelection(const Case& c, int n, std::mt19937& rng) {
  std::vector<int32_t> sel(static_cast<size_t>(c.num_queries) * c.num_kv_heads * n, -1);
  for (int r = 0; r < c.num_queries; ++r) {
    const int64_t blocks = (c.first_position + r) / c.lp + 1;
    for (int kv = 0; kv < c.num_kv_heads; ++kv) {
      std::vector<int32_t> chosen;
      if (blocks <= n || n < 3) {
        for (int32_t j = std::max<int64_t>(0, blocks - n); j < blocks; ++j) chosen.push_back(j);
      } else {
        chosen = {0, static_cast<int32_t>(blocks - 2), static_cast<int32_t>(blocks - 1)};
        std::uniform_int_distribution<int32_t> pick(1, static_cast<int32_t>(blocks - 3));
        while (static_cast<int>(chosen.size()) < n) {
          const int32_t j = pick(rng);
          if (std::find(chosen.begin(), chosen.end(), j) == chosen.end()) chosen.push_back(j);
        }
        std::sort(chosen.begin(), chosen.end());
      }
      std::copy(chosen.begin(), chosen.end(), sel.begin() + (static_cast<size_t>(r) * c.num_kv_heads + kv) * n);
    }
  }
  return sel;
}

// The selection kernel's blocks against the CPU twin's (ref::SelectionScores and SelectBlocks
// over the compressed branch's probabilities) for the sampled queries: the same sets, except
// where the reference's last pick and the best block left out are a near tie (within 1e-4
// relative: the kernel sums the heads and summaries in another order), which is counted and
// allowed for at most 1% of the sets.
void CheckSelection(const Case& c, const NsaParams& p, const KvLayout& L, const std::vector<float>& pool,
                    const std::vector<int32_t>& raw, const std::vector<float>& q, float scale,
                    const std::vector<int>& queries, const std::vector<int32_t>& got) {
  const int G = c.num_heads / c.num_kv_heads;
  int sets = 0, near_ties = 0;
  std::vector<float> out(c.v_head_dim);
  for (int r : queries) {
    const int64_t t = c.first_position + r, cur = t / c.lp, N = p.NumCompressed(t + 1);
    std::vector<int64_t> rows(N);
    std::iota(rows.begin(), rows.end(), 0);
    for (int kv = 0; kv < c.num_kv_heads; ++kv) {
      auto source = [&](bool value) {
        ref::RowSource s;
        s.base = pool.data() + L.Offset(KvPlane::kCmp, 1, kv, value);
        s.row_stride = value ? c.v_head_dim : c.head_dim;
        s.page_table = raw.data();
        s.page_rows = L.RowsPerPage(KvPlane::kCmp);
        s.page_stride = L.page_elems;
        s.row_offset = L.summary_row_shift;
        return s;
      };
      std::vector<float> p_cmp(static_cast<size_t>(G) * std::max<int64_t>(N, 1));
      for (int h = 0; h < G; ++h) {
        const float* qh = q.data() + (static_cast<size_t>(r) * c.num_heads + kv * G + h) * c.head_dim;
        ref::AttendRows(qh, c.head_dim, scale, source(false), source(true), c.v_head_dim, rows, out.data(),
                        p_cmp.data() + static_cast<size_t>(h) * N);
      }
      const std::vector<float> scores = ref::SelectionScores(p, p_cmp.data(), G, N, cur);
      const std::vector<int64_t> want = ref::SelectBlocks(p, scores, cur);
      std::vector<int64_t> have;
      const int32_t* row = got.data() + (static_cast<size_t>(r) * c.num_kv_heads + kv) * c.n;
      for (int k = 0; k < c.n; ++k) {
        if (k < static_cast<int>(want.size())) {
          ASSERT_GE(row[k], 0) << c.name << ": query " << r << " kv " << kv << " entry " << k;
          have.push_back(row[k]);
        } else {
          EXPECT_EQ(row[k], -1) << c.name << ": query " << r << " kv " << kv << " pad " << k;
        }
      }
      ASSERT_TRUE(std::is_sorted(have.begin(), have.end())) << c.name << ": query " << r << " not ascending";
      ++sets;
      if (have == want) continue;
      // A near tie: every block in one set and not the other scores within 1e-4 of the others'.
      float lo_in = INFINITY, hi_out = -INFINITY;
      for (int64_t j : want) {
        if (std::find(have.begin(), have.end(), j) == have.end()) lo_in = std::min(lo_in, scores[j]);
      }
      for (int64_t j : have) {
        if (std::find(want.begin(), want.end(), j) == want.end()) hi_out = std::max(hi_out, scores[j]);
      }
      const bool tie = std::isfinite(lo_in) && std::isfinite(hi_out) && lo_in - hi_out <= 1e-4f * std::abs(lo_in);
      EXPECT_TRUE(tie) << c.name << ": query " << r << " (position " << t << "), kv head " << kv
                       << ": blocks differ from the reference beyond a near tie (" << lo_in << " vs " << hi_out << ")";
      near_ties += tie;
    }
  }
  EXPECT_LE(near_ties * 100, sets) << c.name << ": near ties in " << near_ties << " of " << sets << " sets";
  std::printf("[ select ] %s: %d sets, %d near ties\n", c.name, sets, near_ties);
}

// Runs one branch on the GPU for the case's chunk and checks sampled queries (every query of
// short chunks, else every 7th and the last, each with all its heads) against the CPU twin.
void CheckBranch(const Case& c, Branch branch) {
  NsaParams p;
  p.compress_block = c.l, p.compress_stride = c.d, p.select_block = c.lp, p.window = c.w, p.num_selected = c.n;
  p.score_map = c.l == c.d && c.l == c.lp ? ScoreMap::kIdentity : ScoreMap::kGeometric;
  p.kv_sharing = c.per_branch ? KvSharing::kPerBranch : KvSharing::kShared;
  // Two layers, the second one attended: the layer's offset in a page is part of the test.
  const KvLayout L = KvLayout::Make(2, c.num_kv_heads, c.head_dim, c.v_head_dim, p);
  const int G = c.num_heads / c.num_kv_heads;
  const int64_t context = c.first_position + c.num_queries;
  const int pages = static_cast<int>((context + c.lp - 1) / c.lp);
  const int kinds = c.per_branch ? 2 : 1;
  std::mt19937 rng(4321);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<int32_t> order(static_cast<size_t>(pages) * kinds);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<int32_t> raw(order.begin(), order.begin() + pages), win(order.begin() + (kinds - 1) * pages, order.end());
  auto bf16 = [](float x) { return __bfloat162float(__float2bfloat16(x)); };
  std::vector<float> pool(order.size() * L.page_elems), q(static_cast<size_t>(c.num_queries) * c.num_heads * c.head_dim);
  for (float& x : pool) x = bf16(nd(rng));
  for (float& x : q) x = bf16(0.5f * nd(rng));
  std::vector<__nv_bfloat16> pool_bf(pool.size()), q_bf(q.size());
  for (size_t i = 0; i < pool.size(); ++i) pool_bf[i] = __float2bfloat16(pool[i]);
  for (size_t i = 0; i < q.size(); ++i) q_bf[i] = __float2bfloat16(q[i]);

  cuda::NsaPrefillArgs a;
  a.num_heads = c.num_heads, a.num_kv_heads = c.num_kv_heads, a.head_dim = c.head_dim, a.v_head_dim = c.v_head_dim;
  a.scale = 1.f / std::sqrt(static_cast<float>(c.head_dim)), a.nsa = p, a.layout = L, a.layer = 1;
  a.num_queries = c.num_queries, a.first_position = c.first_position;
  __nv_bfloat16 *d_pool, *d_q;
  int32_t *d_raw, *d_win, *d_sel;
  const std::vector<int32_t> selection = RandomSelection(c, c.n, rng);
  float *d_out, *d_lse;
  const size_t out_n = static_cast<size_t>(c.num_queries) * c.num_heads * c.v_head_dim;
  const size_t lse_n = static_cast<size_t>(c.num_queries) * c.num_heads;
  CUDA_OK(cudaMalloc(&d_pool, pool_bf.size() * 2));
  CUDA_OK(cudaMalloc(&d_q, q_bf.size() * 2));
  CUDA_OK(cudaMalloc(&d_raw, raw.size() * 4));
  CUDA_OK(cudaMalloc(&d_win, win.size() * 4));
  CUDA_OK(cudaMalloc(&d_sel, selection.size() * 4));
  CUDA_OK(cudaMemcpy(d_sel, selection.data(), selection.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMalloc(&d_out, out_n * 4));
  CUDA_OK(cudaMalloc(&d_lse, lse_n * 4));
  CUDA_OK(cudaMemcpy(d_pool, pool_bf.data(), pool_bf.size() * 2, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_q, q_bf.data(), q_bf.size() * 2, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_raw, raw.data(), raw.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_win, win.data(), win.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemset(d_out, 0xFF, out_n * 4));  // poison: NaN unless written
  CUDA_OK(cudaMemset(d_lse, 0xFF, lse_n * 4));
  a.q = d_q, a.pages = d_pool, a.raw_table = d_raw, a.win_table = c.per_branch ? d_win : nullptr, a.selection = d_sel;
  a.branch_row_tiles = branch == Branch::kCompressed2 || branch == Branch::kWindow2 ? 2 : 1;
  a.branch_stages = a.branch_row_tiles == 2 ? 2 : 0;  // two row tiles: two K/V buffers forced
  if (branch == Branch::kCompressed || branch == Branch::kCompressed2) {
    a.cmp_out = d_out, a.cmp_lse = d_lse;
    CUDA_OK(cuda::LaunchNsaPrefillCompressed(a, nullptr));
  } else if (branch == Branch::kWindow || branch == Branch::kWindow2) {
    a.win_out = d_out, a.win_lse = d_lse;
    CUDA_OK(cuda::LaunchNsaPrefillWindow(a, nullptr));
  } else if (branch == Branch::kSelected || branch == Branch::kSelectedSplit || branch == Branch::kSelectedUnion ||
             branch == Branch::kSelectedPadded) {
    a.slc_out = d_out, a.slc_lse = d_lse;
    using Form = cuda::NsaPrefillArgs::SelectedForm;
    if (branch == Branch::kSelectedSplit) a.selected_form = Form::kSplit;
    if (branch == Branch::kSelectedUnion || branch == Branch::kSelectedPadded) a.selected_form = Form::kUnion;
    a.pack_positions = branch != Branch::kSelectedPadded;
    CUDA_OK(cuda::LaunchNsaPrefillSelected(a, nullptr));
  } else {  // the selection, from the compressed branch's log-sum-exps
    a.cmp_out = d_out, a.cmp_lse = d_lse;
    CUDA_OK(cuda::LaunchNsaPrefillCompressed(a, nullptr));
    CUDA_OK(cudaMemset(d_sel, 0x7F, selection.size() * 4));  // poison: no valid block unless written
    a.selection_out = d_sel;
    CUDA_OK(cuda::LaunchNsaPrefillSelect(a, nullptr));
    // The same blocks on a second run: the group sums do not depend on the order threads finish.
    std::vector<int32_t> first(selection.size()), again(selection.size());
    CUDA_OK(cudaMemcpy(first.data(), d_sel, first.size() * 4, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemset(d_sel, 0x7F, selection.size() * 4));
    CUDA_OK(cuda::LaunchNsaPrefillSelect(a, nullptr));
    CUDA_OK(cudaMemcpy(again.data(), d_sel, again.size() * 4, cudaMemcpyDeviceToHost));
    EXPECT_EQ(first, again) << c.name << ": the selection differs between two runs";
  }
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> out(out_n), lse(lse_n);
  std::vector<int32_t> chosen_gpu(selection.size());
  CUDA_OK(cudaMemcpy(out.data(), d_out, out_n * 4, cudaMemcpyDeviceToHost));
  CUDA_OK(cudaMemcpy(lse.data(), d_lse, lse_n * 4, cudaMemcpyDeviceToHost));
  CUDA_OK(cudaMemcpy(chosen_gpu.data(), d_sel, selection.size() * 4, cudaMemcpyDeviceToHost));
  // Read back the branch's output again after a launch with other arguments (rerun).
  auto rerun = [&](int row_tiles, int stages, std::vector<float>* out1, std::vector<float>* lse1) {
    CUDA_OK(cudaMemset(d_out, 0xFF, out_n * 4));
    CUDA_OK(cudaMemset(d_lse, 0xFF, lse_n * 4));
    a.branch_row_tiles = row_tiles, a.branch_stages = stages;
    CUDA_OK(branch == Branch::kCompressed2 ? cuda::LaunchNsaPrefillCompressed(a, nullptr) : cuda::LaunchNsaPrefillWindow(a, nullptr));
    out1->resize(out_n), lse1->resize(lse_n);
    CUDA_OK(cudaMemcpy(out1->data(), d_out, out_n * 4, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(lse1->data(), d_lse, lse_n * 4, cudaMemcpyDeviceToHost));
  };
  if (branch == Branch::kCompressed2 || branch == Branch::kWindow2) {
    // One K/V buffer walks the same tiles in the same order as two: the same floats.
    std::vector<float> out1, lse1;
    rerun(2, 1, &out1, &lse1);
    EXPECT_EQ(0, std::memcmp(out1.data(), out.data(), out_n * 4)) << c.name << ": outputs differ with one K/V buffer";
    EXPECT_EQ(0, std::memcmp(lse1.data(), lse.data(), lse_n * 4)) << c.name << ": log-sum-exps differ with one K/V buffer";
  }
  if (branch == Branch::kCompressed2) {
    // The compressed branch's key tiles start at summary 0 for any block size, so two row tiles a
    // warp do each row's arithmetic in the same order as one: the same floats. (The window's key
    // tiles start at the block's first row's window, which moves with the block's 64 or 128
    // rows; the online softmax then rescales at other keys, and only the CPU twin's tolerance
    // applies: H200, seventh session call 1.)
    std::vector<float> out1, lse1;
    rerun(1, 1, &out1, &lse1);
    EXPECT_EQ(0, std::memcmp(out1.data(), out.data(), out_n * 4)) << c.name << ": outputs differ from one row tile a warp";
    EXPECT_EQ(0, std::memcmp(lse1.data(), lse.data(), lse_n * 4)) << c.name << ": log-sum-exps differ from one row tile a warp";
  }
  for (void* ptr : {static_cast<void*>(d_pool), static_cast<void*>(d_q), static_cast<void*>(d_raw),
                    static_cast<void*>(d_win), static_cast<void*>(d_sel), static_cast<void*>(d_out),
                    static_cast<void*>(d_lse)}) {
    cudaFree(ptr);
  }

  std::vector<int> queries;
  for (int r = 0; r < c.num_queries; r += c.num_queries <= 64 ? 1 : 7) queries.push_back(r);
  queries.push_back(c.num_queries - 1);
  if (branch == Branch::kSelection) return CheckSelection(c, p, L, pool, raw, q, a.scale, queries, chosen_gpu);
  // The two-row-tile forms compute the same branch.
  const Branch kind = branch == Branch::kCompressed2 ? Branch::kCompressed : branch == Branch::kWindow2 ? Branch::kWindow : branch;
  const KvPlane plane = kind == Branch::kCompressed                 ? KvPlane::kCmp
                        : kind == Branch::kWindow && c.per_branch ? KvPlane::kWin
                                                                    : KvPlane::kSel;
  const std::vector<int32_t>& table = plane == KvPlane::kWin ? win : raw;
  std::vector<float> want(c.v_head_dim);
  for (int r : queries) {
    const int64_t t = c.first_position + r;
    for (int h = 0; h < c.num_heads; ++h) {
      // The rows this (position, head) attends, ascending.
      std::vector<int64_t> rows;
      if (kind == Branch::kCompressed) {
        for (int64_t i = 0; i < p.NumCompressed(t + 1); ++i) rows.push_back(i);
      } else if (kind == Branch::kWindow) {
        for (int64_t i = std::max<int64_t>(0, t - c.w + 1); i <= t; ++i) rows.push_back(i);
      } else {
        const int32_t* chosen = selection.data() + (static_cast<size_t>(r) * c.num_kv_heads + h / G) * c.n;
        for (int k = 0; k < c.n && chosen[k] >= 0; ++k) {
          for (int64_t i = int64_t{chosen[k]} * c.lp; i < (int64_t{chosen[k]} + 1) * c.lp && i <= t; ++i) rows.push_back(i);
        }
      }
      auto source = [&](bool value) {
        ref::RowSource s;
        s.base = pool.data() + L.Offset(plane, 1, h / G, value);
        s.row_stride = value ? c.v_head_dim : c.head_dim;
        s.page_table = table.data();
        s.page_rows = L.RowsPerPage(plane);
        s.page_stride = L.page_elems;
        s.row_offset = plane == KvPlane::kCmp ? L.summary_row_shift : 0;
        return s;
      };
      const float* qh = q.data() + (static_cast<size_t>(r) * c.num_heads + h) * c.head_dim;
      const float want_lse = ref::AttendRows(qh, c.head_dim, a.scale, source(false), source(true), c.v_head_dim, rows, want.data());
      const float* got = out.data() + (static_cast<size_t>(r) * c.num_heads + h) * c.v_head_dim;
      const float got_lse = lse[static_cast<size_t>(r) * c.num_heads + h];
      double err = 0, scale = 1e-6;
      for (int e = 0; e < c.v_head_dim; ++e) {
        ASSERT_TRUE(std::isfinite(got[e])) << c.name << ": query " << r << " head " << h;
        err = std::max(err, static_cast<double>(std::abs(got[e] - want[e])));
        scale = std::max(scale, static_cast<double>(std::abs(want[e])));
      }
      if (rows.empty()) {
        EXPECT_EQ(err, 0.0) << c.name << ": query " << r << " sees nothing, its output must be 0";
        EXPECT_TRUE(std::isinf(got_lse) && got_lse < 0) << c.name << ": query " << r << " lse " << got_lse;
      } else {
        EXPECT_LE(err / scale, 1e-2) << c.name << ": query " << r << " (position " << t << "), head " << h;
        EXPECT_NEAR(got_lse, want_lse, 2e-4) << c.name << ": query " << r << ", head " << h;
      }
    }
  }
}

class NsaPrefillTest : public ::testing::TestWithParam<Case> {};

TEST_P(NsaPrefillTest, CompressedBranchMatchesTheCpuTwin) { CheckBranch(GetParam(), Branch::kCompressed); }
TEST_P(NsaPrefillTest, WindowBranchMatchesTheCpuTwin) { CheckBranch(GetParam(), Branch::kWindow); }
TEST_P(NsaPrefillTest, CompressedBranchTwoRowTilesAWarpMatchesTheCpuTwin) { CheckBranch(GetParam(), Branch::kCompressed2); }
TEST_P(NsaPrefillTest, WindowBranchTwoRowTilesAWarpMatchesTheCpuTwin) { CheckBranch(GetParam(), Branch::kWindow2); }
TEST_P(NsaPrefillTest, SelectedBranchMatchesTheCpuTwin) { CheckBranch(GetParam(), Branch::kSelected); }
TEST_P(NsaPrefillTest, SelectedBranchSplitWalkMatchesTheCpuTwin) { CheckBranch(GetParam(), Branch::kSelectedSplit); }
TEST_P(NsaPrefillTest, SelectedBranchUnionWalkMatchesTheCpuTwin) { CheckBranch(GetParam(), Branch::kSelectedUnion); }
TEST_P(NsaPrefillTest, SelectedBranchPaddedUnionWalkMatchesTheCpuTwin) { CheckBranch(GetParam(), Branch::kSelectedPadded); }
TEST_P(NsaPrefillTest, SelectionMatchesTheCpuTwin) { CheckBranch(GetParam(), Branch::kSelection); }

INSTANTIATE_TEST_SUITE_P(
    Shapes, NsaPrefillTest,
    ::testing::Values(
        // The 7b attention shape (G = 16, head dim 128): the start of a sequence, across 64k, at 128k.
        Case{"fla_7b_start", 64, 4, 128, 128, 64, 64, 64, 512, 16, false, 0, 200},
        Case{"fla_7b_64k", 64, 4, 128, 128, 64, 64, 64, 512, 16, false, 65536 - 130, 260},
        Case{"fla_7b_128k", 64, 4, 128, 128, 64, 64, 64, 512, 16, false, 131072 - 64, 64},
        // The paper shape: head dims 192/128, overlapping compression, window pages of its own.
        Case{"paper", 64, 4, 192, 128, 32, 16, 64, 512, 16, true, 8000, 150},
        Case{"G1_hd64", 4, 4, 64, 64, 64, 64, 64, 512, 16, false, 300, 100},
        Case{"G8_fla340m", 32, 4, 64, 64, 64, 64, 64, 512, 16, false, 1000, 100},
        Case{"G64", 64, 1, 128, 128, 64, 64, 64, 512, 16, false, 5000, 40},
        // Several 16-head slices a position, uneven ones, and a partial second slice.
        Case{"G32", 64, 2, 64, 64, 64, 64, 64, 512, 16, false, 3000, 30},
        Case{"G48", 96, 2, 64, 64, 64, 64, 64, 512, 16, false, 3000, 30},
        Case{"G20", 40, 2, 64, 64, 64, 64, 64, 512, 16, false, 3000, 30},
        // A partial last slice of more than 8 heads (its lanes' two rows differ), a group between
        // 8 and 16, and groups that do not divide 16.
        Case{"G28", 56, 2, 64, 64, 64, 64, 64, 512, 16, false, 3000, 30},
        Case{"G12", 24, 2, 64, 64, 64, 64, 64, 512, 16, false, 3000, 30},
        Case{"G3", 6, 2, 64, 64, 64, 64, 64, 512, 16, false, 3000, 37},
        Case{"G7", 14, 2, 64, 64, 64, 64, 64, 512, 16, false, 3000, 37},
        // Packed positions at 64k (a 1,024-block bitmap, 4 x 8 positions a block) and G = 1 with
        // the largest selection (4 x 16 positions x 64 blocks: 4,096 entries a block).
        Case{"G2_64k", 8, 4, 128, 128, 64, 64, 64, 512, 16, false, 65536 - 70, 70},
        Case{"G1_n64", 2, 2, 64, 64, 64, 64, 64, 512, 64, false, 8000, 70},
        // The largest selection, 64 blocks, at 64k.
        Case{"n64", 64, 4, 128, 128, 64, 64, 64, 512, 64, false, 65536 - 40, 40},
        Case{"G4_v_wider", 16, 4, 32, 64, 64, 64, 64, 100, 8, true, 2000, 90},  // value dims wider than key dims
        Case{"v48", 16, 4, 64, 48, 64, 64, 64, 512, 16, false, 3000, 40},  // 6 column tiles: not a multiple of 4
        // The tiny presets: head dims 32 and 48/32, pages of 16 tokens, G = 4, a window of 32.
        Case{"tiny", 8, 2, 32, 32, 16, 16, 16, 32, 4, false, 0, 300},
        Case{"tiny_paper", 8, 2, 48, 32, 8, 4, 16, 32, 4, true, 10, 250}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace nsa
