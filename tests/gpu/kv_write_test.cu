// Cache writes on the GPU against their CPU twins, on fresh random inputs: new K/V rows land in
// exactly their page slots (every plane the layout has, nothing else touched), and summaries
// equal ref::CompressMean / ref::CompressLinear (+ RoPE at the block start) over the same bf16
// inputs, within bf16 rounding of the output, for mean/linear x shared/per-branch layouts.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cuda/kv_write.h"
#include "kernels/reference/nsa_attention.h"
#include "kernels/reference/ops.h"
#include "tests/gpu/cuda_check.h"

namespace nsa {
namespace {

struct Variant {
  const char* name;
  int kvh, hd, vhd, l, d, lp;
  CompressFn fn;
  KvSharing sharing;
};

class KvWriteTest : public ::testing::TestWithParam<Variant> {};

template <typename T>
T* Upload(const std::vector<T>& v) {
  T* d = nullptr;
  cudaMalloc(&d, v.size() * sizeof(T));
  cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
  return d;
}

TEST_P(KvWriteTest, WritesAndSummariesMatchTheCpuTwins) {
  const Variant& c = GetParam();
  NsaParams p;
  p.compress_block = c.l, p.compress_stride = c.d, p.select_block = c.lp, p.compress_fn = c.fn, p.kv_sharing = c.sharing;
  const KvLayout L = KvLayout::Make(2, c.kvh, c.hd, c.vhd, p);
  const int layer = 1, seqs = 2, max_pages = 8;
  const int64_t T = static_cast<int64_t>(max_pages) * c.lp;  // tokens per sequence
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  auto bf = [](float x) { return __float2bfloat16(x); };
  // Tables: every kind of page for both sequences, shuffled over the pool.
  const int kinds = 1 + L.has_win + (L.has_src_k || L.has_src_v);
  const int num_pages = seqs * max_pages * kinds;
  std::vector<int32_t> order(num_pages);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<int32_t> raw(seqs * max_pages), win(seqs * max_pages), src(seqs * max_pages);
  for (int i = 0, k = 0; i < seqs * max_pages; ++i) {
    raw[i] = order[k++];
    if (L.has_win) win[i] = order[k++];
    if (L.has_src_k || L.has_src_v) src[i] = order[k++];
  }
  std::vector<float> pool(static_cast<size_t>(num_pages) * L.page_elems);
  for (float& x : pool) x = __bfloat162float(bf(nd(rng)));
  std::vector<__nv_bfloat16> pool_bf(pool.size());
  for (size_t i = 0; i < pool.size(); ++i) pool_bf[i] = bf(pool[i]);

  // 1. Writes: 5 tokens at scattered positions.
  const std::vector<int32_t> tok_seq = {0, 1, 0, 1, 0};
  const std::vector<int64_t> tok_pos = {0, 63, 64, 200, T - 1};
  const int n = static_cast<int>(tok_seq.size());
  auto rows = [&](int dim) {
    std::vector<__nv_bfloat16> r(static_cast<size_t>(n) * c.kvh * dim);
    for (auto& x : r) x = bf(nd(rng));
    return r;
  };
  auto k = rows(c.hd), v = rows(c.vhd), kw = rows(c.hd), vw = rows(c.vhd), ks = rows(c.hd), vs = rows(c.vhd);
  __nv_bfloat16* d_pool = Upload(pool_bf);
  int32_t *d_raw = Upload(raw), *d_win = Upload(win), *d_src = Upload(src), *d_seq = Upload(tok_seq);
  int64_t* d_pos = Upload(tok_pos);
  cuda::KvWriteArgs w;
  w.layout = L, w.layer = layer, w.num_tokens = n, w.token_seq = d_seq, w.token_pos = d_pos;
  w.raw_tables = d_raw, w.win_tables = d_win, w.src_tables = d_src, w.max_pages = max_pages, w.pages = d_pool;
  w.k = Upload(k), w.v = Upload(v), w.k_win = Upload(kw), w.v_win = Upload(vw), w.k_src = Upload(ks), w.v_src = Upload(vs);
  CUDA_OK(cuda::LaunchKvWrite(w, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<__nv_bfloat16> after(pool_bf.size());
  CUDA_OK(cudaMemcpy(after.data(), d_pool, after.size() * 2, cudaMemcpyDeviceToHost));
  // Expected pool: the CPU writes the same rows through the same addressing.
  std::vector<__nv_bfloat16> want = pool_bf;
  auto put = [&](const std::vector<int32_t>& tables, KvPlane plane, bool value, const std::vector<__nv_bfloat16>& src_rows,
                 int dim) {
    for (int i = 0; i < n; ++i) {
      for (int g = 0; g < c.kvh; ++g) {
        const int64_t page = tables[tok_seq[i] * max_pages + tok_pos[i] / c.lp];
        const int64_t at = page * L.page_elems + L.Offset(plane, layer, g, value) + (tok_pos[i] % c.lp) * dim;
        for (int e = 0; e < dim; ++e) want[at + e] = src_rows[(static_cast<size_t>(i) * c.kvh + g) * dim + e];
      }
    }
  };
  put(raw, KvPlane::kSel, false, k, c.hd);
  put(raw, KvPlane::kSel, true, v, c.vhd);
  if (L.has_win) put(win, KvPlane::kWin, false, kw, c.hd), put(win, KvPlane::kWin, true, vw, c.vhd);
  if (L.has_src_k) put(src, KvPlane::kSrc, false, ks, c.hd);
  if (L.has_src_v) put(src, KvPlane::kSrc, true, vs, c.vhd);
  size_t diffs = 0;
  for (size_t i = 0; i < want.size(); ++i) diffs += std::memcmp(&want[i], &after[i], 2) != 0;
  EXPECT_EQ(diffs, 0u) << "elements differing from the expected pool after the writes";

  // 2. Summaries of every complete block of sequence 1, over the pool as written.
  for (size_t i = 0; i < after.size(); ++i) pool[i] = __bfloat162float(after[i]);
  const int64_t count = p.NumCompressed(T);
  std::vector<int32_t> sum_seq(count, 1);
  std::vector<int64_t> sum_idx(count);
  std::iota(sum_idx.begin(), sum_idx.end(), 0);
  std::vector<float> pe(static_cast<size_t>(c.kvh) * c.l * c.hd);
  std::vector<__nv_bfloat16> wk(static_cast<size_t>(c.kvh) * c.l * c.hd * c.hd), wv(static_cast<size_t>(c.kvh) * c.l * c.vhd * c.vhd);
  for (float& x : pe) x = 0.5f * nd(rng);
  const float sk = 1.f / std::sqrt(static_cast<float>(c.l * c.hd)), sv = 1.f / std::sqrt(static_cast<float>(c.l * c.vhd));
  for (auto& x : wk) x = bf(sk * nd(rng));
  for (auto& x : wv) x = bf(sv * nd(rng));
  cuda::SummaryArgs s;
  s.layout = L, s.nsa = p, s.layer = layer, s.rope_theta = 10000.0, s.num_summaries = static_cast<int>(count);
  s.summary_seq = Upload(sum_seq), s.summary_index = Upload(sum_idx), s.raw_tables = d_raw, s.src_tables = d_src;
  s.max_pages = max_pages, s.intra_block_pe = Upload(pe), s.compress_key = Upload(wk), s.compress_value = Upload(wv);
  s.pages = d_pool;
  CUDA_OK(cuda::LaunchSummaries(s, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  CUDA_OK(cudaMemcpy(after.data(), d_pool, after.size() * 2, cudaMemcpyDeviceToHost));

  std::vector<float> wk_f(wk.size()), wv_f(wv.size());
  for (size_t i = 0; i < wk.size(); ++i) wk_f[i] = __bfloat162float(wk[i]);
  for (size_t i = 0; i < wv.size(); ++i) wv_f[i] = __bfloat162float(wv[i]);
  double worst = 0;
  for (int64_t i = 0; i < count; ++i) {
    for (int g = 0; g < c.kvh; ++g) {
      for (bool value : {false, true}) {
        const int dim = value ? c.vhd : c.hd;
        const bool own = value ? L.has_src_v : L.has_src_k;
        ref::RowSource in;
        in.base = pool.data() + L.Offset(own ? KvPlane::kSrc : KvPlane::kSel, layer, g, value);
        in.row_stride = dim, in.page_table = (own ? src : raw).data() + max_pages, in.page_rows = c.lp;
        in.page_stride = L.page_elems;
        std::vector<float> ref_out(dim);
        const int64_t first = i * c.d;
        if (c.fn == CompressFn::kMean) {
          ref::CompressMean(in, first, c.l, dim, ref_out.data());
        } else {
          const std::vector<float>& wf = value ? wv_f : wk_f;
          ref::CompressLinear(in, first, c.l, dim, value ? nullptr : pe.data() + static_cast<size_t>(g) * c.l * c.hd,
                              wf.data() + static_cast<size_t>(g) * c.l * dim * dim, dim, ref_out.data());
          if (!value) ref::ApplyRope(ref_out.data(), 1, dim, first, 10000.0);
        }
        const int64_t end = first + c.l - 1;
        const int64_t at = static_cast<int64_t>(raw[max_pages + end / c.lp]) * L.page_elems +
                           L.Offset(KvPlane::kCmp, layer, g, value) + ((end % c.lp) / c.d) * dim;
        double err = 0, scale = 1e-3;
        for (int e = 0; e < dim; ++e) {
          const float got = __bfloat162float(after[at + e]);
          ASSERT_TRUE(std::isfinite(got));
          err = std::max(err, static_cast<double>(std::abs(got - ref_out[e])));
          scale = std::max(scale, static_cast<double>(std::abs(ref_out[e])));
        }
        worst = std::max(worst, err / scale);
        ASSERT_LE(err / scale, 1e-2) << c.name << " summary " << i << " head " << g << (value ? " V" : " K");
      }
    }
  }
  std::printf("%s: %lld summaries, worst relative error %.2e\n", c.name, static_cast<long long>(count), worst);
  cudaDeviceReset();
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, KvWriteTest,
    ::testing::Values(Variant{"fla_mean_shared", 4, 128, 128, 64, 64, 64, CompressFn::kMean, KvSharing::kShared},
                      Variant{"paper_linear_per_branch", 4, 192, 128, 32, 16, 64, CompressFn::kLinear, KvSharing::kPerBranch},
                      Variant{"linear_shared", 2, 64, 64, 32, 16, 64, CompressFn::kLinear, KvSharing::kShared},
                      Variant{"mean_per_branch", 2, 64, 64, 32, 16, 64, CompressFn::kMean, KvSharing::kPerBranch}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace nsa
