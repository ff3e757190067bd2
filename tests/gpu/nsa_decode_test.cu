// The CUDA NSA decode attention against its CPU twin (ref::NsaAttendGroup) on fresh random
// inputs: paged bf16 caches with scrambled page ids, batches of mixed lengths (boundaries,
// 8k, 64k, 128k), G from 1 to 64, head dims 32/48/64/128/192 (values 32/64/128), the fla default
// and the paper variant (l=32, d=16, l'=64, per-branch window pages), and the tiny presets.
// Outputs within 4e-3 relative (the kernel rounds softmax weights to bf16 for the tensor-core
// P.V product, 2^-9 relative each; small head dims measured 3.0e-3); selected block sets equal.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include <cuda_bf16.h>

#include "kernels/cuda/nsa_decode.h"
#include "kernels/reference/nsa_attention.h"
#include "tests/gpu/cuda_check.h"

namespace nsa {
namespace {

struct Case {
  const char* name;
  int num_heads, num_kv_heads, head_dim, v_head_dim;
  int l, d, lp, n, w;
  bool per_branch;
  std::vector<int64_t> contexts;  // one sequence each: context = t + 1
};

NsaParams Params(const Case& c) {
  NsaParams p;
  p.compress_block = c.l, p.compress_stride = c.d, p.select_block = c.lp, p.num_selected = c.n, p.window = c.w;
  p.score_map = c.l == c.d && c.l == c.lp ? ScoreMap::kIdentity : ScoreMap::kGeometric;
  p.kv_sharing = c.per_branch ? KvSharing::kPerBranch : KvSharing::kShared;
  return p;
}

float Bf16Round(float x) {
  return __bfloat162float(__float2bfloat16(x));
}

// The largest |got - want| over the largest |want| (at least 1e-6); infinite when either holds a
// value that is not finite (the kernels' outputs are poisoned with NaNs before each launch).
double RelativeDifference(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, mag = 1e-6;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    if (!std::isfinite(got[i]) || !std::isfinite(want[i])) return std::numeric_limits<double>::infinity();
    diff = std::max(diff, static_cast<double>(std::abs(got[i] - want[i])));
    mag = std::max(mag, static_cast<double>(std::abs(want[i])));
  }
  return diff / mag;
}

class NsaDecodeTest : public ::testing::TestWithParam<Case> {};

TEST_P(NsaDecodeTest, MatchesTheCpuTwin) {
  const Case& c = GetParam();
  const NsaParams p = Params(c);
  const KvLayout L = KvLayout::Make(1, c.num_kv_heads, c.head_dim, c.v_head_dim, p);
  const int B = static_cast<int>(c.contexts.size());
  const int G = c.num_heads / c.num_kv_heads;
  const int64_t max_context = *std::max_element(c.contexts.begin(), c.contexts.end());
  const int max_pages = static_cast<int>((max_context + c.lp - 1) / c.lp);
  std::mt19937 rng(1234);
  std::normal_distribution<float> nd(0.f, 1.f);

  // Pages: raw (and window) pages of every sequence, at shuffled pool positions.
  int64_t total = 0;
  for (int64_t ctx : c.contexts) total += (ctx + c.lp - 1) / c.lp * (c.per_branch ? 2 : 1);
  std::vector<int32_t> order(total);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<int32_t> raw(static_cast<size_t>(B) * max_pages, 0), win(raw.size(), 0);
  size_t next = 0;
  for (int b = 0; b < B; ++b) {
    for (int64_t j = 0; j < (c.contexts[b] + c.lp - 1) / c.lp; ++j) {
      raw[b * max_pages + j] = order[next++];
      if (c.per_branch) win[b * max_pages + j] = order[next++];
    }
  }
  std::vector<float> pool(static_cast<size_t>(total) * L.page_elems);
  for (float& x : pool) x = Bf16Round(nd(rng));
  std::vector<__nv_bfloat16> pool_bf(pool.size());
  for (size_t i = 0; i < pool.size(); ++i) pool_bf[i] = __float2bfloat16(pool[i]);
  std::vector<float> q(static_cast<size_t>(B) * c.num_heads * c.head_dim), gates(static_cast<size_t>(B) * c.num_heads * 3);
  for (float& x : q) x = Bf16Round(0.5f * nd(rng));
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  for (float& x : gates) x = ud(rng);
  std::vector<__nv_bfloat16> q_bf(q.size());
  for (size_t i = 0; i < q.size(); ++i) q_bf[i] = __float2bfloat16(q[i]);
  std::vector<int64_t> positions(B);
  for (int b = 0; b < B; ++b) positions[b] = c.contexts[b] - 1;

  // GPU.
  cuda::NsaDecodeArgs a;
  a.batch = B, a.num_heads = c.num_heads, a.num_kv_heads = c.num_kv_heads, a.head_dim = c.head_dim;
  a.v_head_dim = c.v_head_dim, a.layer = 0, a.scale = 1.f / std::sqrt(static_cast<float>(c.head_dim));
  a.nsa = p, a.layout = L, a.max_pages = max_pages, a.max_context = max_context;
  __nv_bfloat16 *d_pool, *d_q;
  float *d_gates, *d_out;
  int32_t *d_raw, *d_win, *d_sel;
  int64_t* d_pos;
  void* d_ws;
  const size_t out_n = static_cast<size_t>(B) * c.num_heads * c.v_head_dim;
  CUDA_OK(cudaMalloc(&d_pool, pool_bf.size() * 2));
  CUDA_OK(cudaMalloc(&d_q, q_bf.size() * 2));
  CUDA_OK(cudaMalloc(&d_gates, gates.size() * 4));
  CUDA_OK(cudaMalloc(&d_out, out_n * 4));
  CUDA_OK(cudaMalloc(&d_raw, raw.size() * 4));
  CUDA_OK(cudaMalloc(&d_win, win.size() * 4));
  CUDA_OK(cudaMalloc(&d_sel, static_cast<size_t>(B) * c.num_kv_heads * c.n * 4));
  CUDA_OK(cudaMalloc(&d_pos, B * 8));
  CUDA_OK(cudaMemcpy(d_pool, pool_bf.data(), pool_bf.size() * 2, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_q, q_bf.data(), q_bf.size() * 2, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_gates, gates.data(), gates.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_raw, raw.data(), raw.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_win, win.data(), win.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_pos, positions.data(), B * 8, cudaMemcpyHostToDevice));
  a.q = d_q, a.gates = d_gates, a.pages = d_pool, a.raw_tables = d_raw, a.win_tables = c.per_branch ? d_win : nullptr;
  a.positions = d_pos, a.out = d_out, a.selected = d_sel;
  CUDA_OK(cudaMalloc(&d_ws, cuda::NsaDecodeWorkspaceBytes(a)));
  a.workspace = d_ws;
  // The fused kernel (three times over one workspace: its counters must start afresh each time,
  // whatever the last launch left) and the staged launches, each from poisoned outputs.
  std::vector<float> out(out_n), out_staged(out_n);
  std::vector<int32_t> sel(static_cast<size_t>(B) * c.num_kv_heads * c.n), sel_staged(sel.size());
  for (int run = 0; run < 4; ++run) {
    a.staged = run == 3;
    CUDA_OK(cudaMemset(d_out, 0xFF, out_n * 4));
    CUDA_OK(cudaMemset(d_sel, 0xFF, sel.size() * 4));
    CUDA_OK(cuda::LaunchNsaDecode(a, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<float>& o = a.staged ? out_staged : out;
    std::vector<int32_t>& s = a.staged ? sel_staged : sel;
    std::vector<float> before = o;
    CUDA_OK(cudaMemcpy(o.data(), d_out, out_n * 4, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(s.data(), d_sel, s.size() * 4, cudaMemcpyDeviceToHost));
    if (run == 1 || run == 2) {
      EXPECT_EQ(0, std::memcmp(before.data(), o.data(), out_n * 4)) << "fused run " << run << " differs from run 0";
    }
  }
  // A form's bf16 output alone (NsaDecodeArgs::out_bf16, out null) against `fp32` rounded: how
  // many values differ (poisoned first).
  auto bf16_mismatches = [&](cuda::NsaDecodeArgs form, const std::vector<float>& fp32, size_t* wrong) {
    __nv_bfloat16* d_out16 = nullptr;
    CUDA_OK(cudaMalloc(&d_out16, out_n * 2));
    CUDA_OK(cudaMemset(d_out16, 0xFF, out_n * 2));
    form.staged = false, form.out = nullptr, form.out_bf16 = d_out16;
    CUDA_OK(cuda::LaunchNsaDecode(form, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<__nv_bfloat16> got16(out_n);
    CUDA_OK(cudaMemcpy(got16.data(), d_out16, out_n * 2, cudaMemcpyDeviceToHost));
    cudaFree(d_out16);
    *wrong = 0;
    for (size_t i = 0; i < out_n; ++i) {
      const __nv_bfloat16 want16 = __float2bfloat16(fp32[i]);
      *wrong += std::memcmp(&want16, &got16[i], 2) != 0;
    }
  };
  // The bf16 output alone with no selection asked for (selected null): the runner's decode steps,
  // where short contexts skip the selection stage altogether. The fused output rounded, bit for bit.
  {
    cuda::NsaDecodeArgs b16 = a;
    b16.selected = nullptr;
    size_t wrong = SIZE_MAX;
    bf16_mismatches(b16, out, &wrong);
    EXPECT_EQ(wrong, 0u) << "bf16 outputs that are not the fp32 output rounded";
  }
  // One more launch of another form from poisoned outputs; its output and selection.
  auto run_form = [&](const cuda::NsaDecodeArgs& form, std::vector<float>& o, std::vector<int32_t>& s) {
    o.resize(out_n), s.resize(sel.size());
    CUDA_OK(cudaMemset(d_out, 0xFF, out_n * 4));
    CUDA_OK(cudaMemset(d_sel, 0xFF, sel.size() * 4));
    CUDA_OK(cuda::LaunchNsaDecode(form, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(o.data(), d_out, out_n * 4, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(s.data(), d_sel, s.size() * 4, cudaMemcpyDeviceToHost));
  };
  // For G <= 16, the other tile form (NsaDecodeArgs::key_split: the default splits the keys
  // across the warps, this one V's columns): the same scores (so the same selection) and the same
  // function, summed in another order. P is rounded to bf16 against each form's own running
  // maximum (a warp's 16 keys or the tile's 64), so the two differ by P's rounding, as each
  // differs from the CPU twin: the twin's bound (H200, eighth session call 1: 1.1e-4 to 2.1e-3
  // between the forms; a wrong form is off by O(1)).
  if (G <= 16) {
    std::vector<float> out_cols;
    std::vector<int32_t> sel_cols;
    cuda::NsaDecodeArgs cols = a;
    cols.key_split = 0;
    run_form(cols, out_cols, sel_cols);
    EXPECT_EQ(sel, sel_cols) << "the column split selected other blocks";
    EXPECT_LE(RelativeDifference(out_cols, out), 4e-3) << "key-split and column-split outputs differ";
  }
  // The merge in another form (NsaDecodeArgs::merge_heads: the default, one head a merge task at
  // these batches, against four (or two) heads a task, as large batches take): the same partials
  // merged in the same order, the merge factors' sums in another (a wrong merge is off by O(1)).
  if (cuda::NsaDecodeMergeHeads(a) == 1 && G % 2 == 0) {
    std::vector<float> out_heads;
    std::vector<int32_t> sel_heads;
    cuda::NsaDecodeArgs other = a;
    other.staged = false;
    other.merge_heads = G % 4 == 0 ? 4 : 2;
    ASSERT_EQ(cuda::NsaDecodeMergeHeads(other), other.merge_heads);
    run_form(other, out_heads, sel_heads);
    EXPECT_EQ(sel, sel_heads) << "the other merge form selected other blocks";
    EXPECT_LE(RelativeDifference(out_heads, out), 1e-5) << "merges of one and of several heads a task differ";
    // Its bf16 output alone: out_heads rounded, bit for bit.
    size_t wrong = SIZE_MAX;
    bf16_mismatches(other, out_heads, &wrong);
    EXPECT_EQ(wrong, 0u) << "the other merge form's bf16 outputs are not its fp32 output rounded";
  }
  // A larger max_context, as a CUDA graph's context bucket gives the runner, where it cuts the
  // summaries into the same runs: only empty tasks more, so the same blocks and the same bits
  // (model_gpu_test's graph = eager rests on this).
  {
    cuda::NsaDecodeArgs bucket = a;
    bucket.staged = false, bucket.max_context = 4 * max_context;
    if (cuda::NsaDecodeCompressedRun(bucket) == cuda::NsaDecodeCompressedRun(a)) {
      void* d_ws_bucket = nullptr;
      CUDA_OK(cudaMalloc(&d_ws_bucket, cuda::NsaDecodeWorkspaceBytes(bucket)));
      bucket.workspace = d_ws_bucket;
      std::vector<float> out_bucket;
      std::vector<int32_t> sel_bucket;
      run_form(bucket, out_bucket, sel_bucket);
      cudaFree(d_ws_bucket);
      EXPECT_EQ(sel, sel_bucket) << "a larger max_context selected other blocks";
      EXPECT_EQ(0, std::memcmp(out.data(), out_bucket.data(), out_n * 4)) << "a larger max_context changed the output";
    }
  }
  // The same tasks in both forms, merged in the same order: equal up to the compiler's
  // contractions in two kernels.
  EXPECT_EQ(sel, sel_staged);
  EXPECT_LE(RelativeDifference(out_staged, out), 1e-5) << "fused and staged outputs differ";
  for (void* ptr : {static_cast<void*>(d_pool), static_cast<void*>(d_q), static_cast<void*>(d_gates),
                    static_cast<void*>(d_out), static_cast<void*>(d_raw), static_cast<void*>(d_win),
                    static_cast<void*>(d_sel), static_cast<void*>(d_pos), d_ws}) {
    cudaFree(ptr);
  }

  // CPU twin over the same bf16 values.
  const ref::NsaDims dims{G, c.head_dim, c.v_head_dim, a.scale};
  int mismatched_sets = 0;
  for (int b = 0; b < B; ++b) {
    for (int g = 0; g < c.num_kv_heads; ++g) {
      auto rows = [&](KvPlane plane, bool value, const std::vector<int32_t>& table) {
        ref::RowSource r;
        r.base = pool.data() + L.Offset(plane, 0, g, value);
        r.row_stride = value ? c.v_head_dim : c.head_dim;
        r.page_table = table.data() + static_cast<size_t>(b) * max_pages;
        r.page_rows = L.RowsPerPage(plane);
        r.page_stride = L.page_elems;
        r.row_offset = plane == KvPlane::kCmp ? L.summary_row_shift : 0;
        return r;
      };
      ref::NsaKvHead kv;
      kv.k_sel = rows(KvPlane::kSel, false, raw), kv.v_sel = rows(KvPlane::kSel, true, raw);
      kv.k_cmp = rows(KvPlane::kCmp, false, raw), kv.v_cmp = rows(KvPlane::kCmp, true, raw);
      kv.k_win = c.per_branch ? rows(KvPlane::kWin, false, win) : kv.k_sel;
      kv.v_win = c.per_branch ? rows(KvPlane::kWin, true, win) : kv.v_sel;
      std::vector<float> want(static_cast<size_t>(G) * c.v_head_dim);
      std::vector<int64_t> blocks;
      const size_t head0 = static_cast<size_t>(b) * c.num_heads + static_cast<size_t>(g) * G;
      ref::NsaAttendGroup(p, dims, q.data() + head0 * c.head_dim, gates.data() + head0 * 3, positions[b], kv, want.data(),
                          &blocks);
      std::vector<int64_t> got_blocks;
      for (int k = 0; k < c.n; ++k) {
        const int32_t x = sel[(static_cast<size_t>(b) * c.num_kv_heads + g) * c.n + k];
        if (x >= 0) got_blocks.push_back(x);
      }
      if (got_blocks != blocks) {
        ++mismatched_sets;
        continue;  // an output over other blocks is not comparable
      }
      double err = 0, scale = 1e-6;
      for (size_t i = 0; i < want.size(); ++i) {
        const float x = out[head0 * c.v_head_dim + i];
        ASSERT_TRUE(std::isfinite(x)) << "batch " << b << " head " << g;
        err = std::max(err, static_cast<double>(std::abs(x - want[i])));
        scale = std::max(scale, static_cast<double>(std::abs(want[i])));
      }
      EXPECT_LE(err / scale, 4e-3) << c.name << ": sequence " << b << " (context " << c.contexts[b] << "), kv head " << g;
    }
  }
  EXPECT_EQ(mismatched_sets, 0) << c.name << ": selected block sets differ from the reference";
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, NsaDecodeTest,
    ::testing::Values(
        // The 7b attention shape: 64 query heads over 4 KV heads (G = 16), head dim 128.
        Case{"fla_7b", 64, 4, 128, 128, 64, 64, 64, 16, 512, false, {1, 63, 64, 65, 1023, 1024, 1025, 8192, 65536}},
        Case{"fla_7b_128k", 64, 4, 128, 128, 64, 64, 64, 16, 512, false, {131072}},
        // The paper shape: head dims 192/128, overlapping compression, per-branch window pages.
        Case{"paper", 64, 4, 192, 128, 32, 16, 64, 16, 512, true, {1, 31, 32, 47, 64, 1100, 8192, 65536}},
        Case{"G1_hd64", 4, 4, 64, 64, 64, 64, 64, 16, 512, false, {1, 500, 5000}},
        Case{"G2_hd64", 8, 4, 64, 64, 32, 16, 64, 8, 256, true, {100, 3000}},
        Case{"G8_fla340m", 32, 4, 64, 64, 64, 64, 64, 16, 512, false, {2000, 20000}},
        Case{"G8_140k", 32, 4, 64, 64, 64, 64, 64, 16, 512, false, {140000, 131073}},
        Case{"G64", 64, 1, 128, 128, 64, 64, 64, 16, 512, false, {777, 40000}},
        // G = 12 (padded heads in the 16-row tile) and v_head_dim > head_dim (the key split's
        // merge reaches into q's shared memory).
        Case{"G12_v_wider", 24, 2, 32, 64, 16, 16, 16, 4, 32, false, {1, 100, 3000}},
        // The tiny presets (the embedded default): head dims 32 and 48/32, pages of 16 tokens.
        Case{"tiny", 8, 2, 32, 32, 16, 16, 16, 4, 32, false, {1, 15, 16, 17, 100, 255, 4096}},
        Case{"tiny_paper", 8, 2, 48, 32, 8, 4, 16, 4, 32, true, {1, 7, 8, 12, 100, 255, 4096}}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace nsa
