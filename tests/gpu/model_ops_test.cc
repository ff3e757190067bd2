// The model's GPU operators (kernels/cuda/model_ops.h, kernels/cuda/gemm.h) against their CPU
// twins (kernels/reference/ops.h, models/presets.h RandomWeight) on fresh random inputs:
// embedding rows, RMSNorm with and without a row gather, the q|k|v|gates split with biases, RoPE
// at positions up to 128k and the sigmoid, SwiGLU, the cuBLASLt projection (plain and added onto
// its output), and the device's random weights element for element.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include <cuda_bf16.h>

#include "kernels/cuda/gemm.h"
#include "kernels/cuda/small_gemm.h"
#include "kernels/cuda/model_ops.h"
#include "kernels/kv_layout.h"
#include "kernels/nsa_params.h"
#include "kernels/reference/ops.h"
#include "models/presets.h"
#include "tests/test_util.h"
#include "tests/gpu/cuda_check.h"

namespace nsa {
namespace {

float Bf(float x) { return __bfloat162float(__float2bfloat16(x)); }

template <typename T>
T* Upload(const std::vector<T>& v) {
  T* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, std::max<size_t>(v.size(), 1) * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}

template <typename T>
std::vector<T> Download(const T* d, size_t n) {
  std::vector<T> v(n);
  EXPECT_EQ(cudaMemcpy(v.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

std::vector<float> ToFloat(const std::vector<__nv_bfloat16>& v) {
  std::vector<float> f(v.size());
  for (size_t i = 0; i < v.size(); ++i) f[i] = __bfloat162float(v[i]);
  return f;
}

std::vector<float> Random(size_t n, std::mt19937& rng, float scale = 1.0f, bool bf16 = true) {
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = bf16 ? Bf(nd(rng)) : nd(rng);
  return v;
}

std::vector<__nv_bfloat16> ToBf(const std::vector<float>& v) {
  std::vector<__nv_bfloat16> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = __float2bfloat16(v[i]);
  return b;
}

TEST(ModelOpsTest, EmbeddingAndRmsNorm) {
  std::mt19937 rng(1);
  const int V = 300, H = 1000, n = 7;
  const std::vector<float> table = Random(size_t{V} * H, rng), weight = Random(H, rng, 0.3f, false);
  const std::vector<int32_t> tokens = {5, 0, 299, 17, 17, 120, 3};
  int32_t* d_tokens = Upload(tokens);
  __nv_bfloat16* d_table = Upload(ToBf(table));
  float *d_weight = Upload(weight), *d_x = nullptr;
  CUDA_OK(cudaMalloc(&d_x, n * H * sizeof(float)));
  CUDA_OK(cuda::LaunchEmbed(d_tokens, n, d_table, H, d_x, nullptr));
  const std::vector<float> x = Download(d_x, static_cast<size_t>(n) * H);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < H; ++j) ASSERT_EQ(x[i * H + j], table[static_cast<size_t>(tokens[i]) * H + j]);
  }
  // RMSNorm of every row, and of a gathered subset.
  __nv_bfloat16* d_out = nullptr;
  CUDA_OK(cudaMalloc(&d_out, n * H * sizeof(__nv_bfloat16)));
  std::vector<float> want(static_cast<size_t>(n) * H);
  ref::RmsNorm(x.data(), n, H, weight.data(), 1e-6f, want.data());
  CUDA_OK(cuda::LaunchRmsNorm(d_x, nullptr, n, H, d_weight, 1e-6f, d_out, nullptr));
  EXPECT_LE(MaxRelErr(ToFloat(Download(d_out, static_cast<size_t>(n) * H)), want), 4e-3);
  const std::vector<int32_t> rows = {6, 2};
  int32_t* d_rows = Upload(rows);
  CUDA_OK(cuda::LaunchRmsNorm(d_x, d_rows, 2, H, d_weight, 1e-6f, d_out, nullptr));
  const std::vector<float> got = ToFloat(Download(d_out, size_t{2} * H));
  for (int r = 0; r < 2; ++r) {
    const std::vector<float> g(got.begin() + r * H, got.begin() + (r + 1) * H);
    const std::vector<float> w(want.begin() + rows[r] * H, want.begin() + (rows[r] + 1) * H);
    EXPECT_LE(MaxRelErr(g, w), 4e-3) << "gathered row " << r;
  }
  for (void* p : {(void*)d_tokens, (void*)d_table, (void*)d_weight, (void*)d_x, (void*)d_out, (void*)d_rows}) cudaFree(p);
}

// Both RMSNorm forms: the vectorised one (dim % 4 == 0 up to 8192: a decode step's rows) and the
// generic one (any other dim), one row and several, against the CPU twin.
TEST(ModelOpsTest, RmsNormBothFormsMatchTheCpuTwin) {
  std::mt19937 rng(11);
  for (int H : {4, 1000, 2048, 4096, 8192, 1001, 8196}) {
    for (int n : {1, 5}) {
      const std::vector<float> x = Random(static_cast<size_t>(n) * H, rng, 3.0f, false), weight = Random(H, rng, 0.3f, false);
      float *d_x = Upload(x), *d_weight = Upload(weight);
      __nv_bfloat16* d_out = nullptr;
      CUDA_OK(cudaMalloc(&d_out, static_cast<size_t>(n) * H * sizeof(__nv_bfloat16)));
      std::vector<float> want(static_cast<size_t>(n) * H);
      ref::RmsNorm(x.data(), n, H, weight.data(), 1e-5f, want.data());
      CUDA_OK(cuda::LaunchRmsNorm(d_x, nullptr, n, H, d_weight, 1e-5f, d_out, nullptr));
      EXPECT_LE(MaxRelErr(ToFloat(Download(d_out, static_cast<size_t>(n) * H)), want), 4e-3) << "dim " << H << ", rows " << n;
      // The rows 4 bytes off 16-byte alignment (x shifted by one float): the generic form.
      if (n == 1) {
        float* d_shifted = Upload(std::vector<float>(H + 1, 0.f));
        CUDA_OK(cudaMemcpy(d_shifted + 1, d_x, H * sizeof(float), cudaMemcpyDeviceToDevice));
        CUDA_OK(cuda::LaunchRmsNorm(d_shifted + 1, nullptr, 1, H, d_weight, 1e-5f, d_out, nullptr));
        EXPECT_LE(MaxRelErr(ToFloat(Download(d_out, static_cast<size_t>(H))), want), 4e-3) << "dim " << H << ", unaligned row";
        cudaFree(d_shifted);
      }
      for (void* p : {(void*)d_x, (void*)d_weight, (void*)d_out}) cudaFree(p);
    }
  }
}

TEST(ModelOpsTest, QkvSplitWithRopeBiasAndGates) {
  // A small shape, and 7b's heads for one token (more work items than one block's threads).
  struct Shape {
    int n, nh, kvh, hd, vhd;
  };
  // Prefill chunks (16 tokens or more) take 16 heads an item: 20 tokens of 20 heads (groups of
  // 16 and 4), 17 of 7b's.
  for (const Shape shape : {Shape{5, 8, 2, 48, 32}, Shape{1, 64, 4, 128, 128}, Shape{20, 20, 4, 48, 32}, Shape{17, 64, 4, 128, 128}})
  for (bool per_branch : {false, true}) {
    for (bool linear : {false, true}) {
      std::mt19937 rng(2 + per_branch * 2 + linear);
      const int n = shape.n, nh = shape.nh, kvh = shape.kvh, hd = shape.hd, vhd = shape.vhd;
      const int width = nh * hd + kvh * hd + kvh * vhd + 3 * nh + (per_branch ? 2 * (kvh * hd + kvh * vhd) : 0);
      const std::vector<float> proj = Random(static_cast<size_t>(n) * width, rng, 1.0f, false);
      const std::vector<float> qb = Random(nh * hd, rng, 0.1f, false), kb = Random(kvh * hd, rng, 0.1f, false),
                               vb = Random(kvh * vhd, rng, 0.1f, false);
      std::vector<int64_t> pos = {0, 1, 777, 65535, 131071};
      for (int t = 5; t < n; ++t) pos.push_back(int64_t{t} * 7919 % 131072);
      const double theta = 500000.0;
      std::vector<double> inv_freq(hd / 2);
      for (int i = 0; i < hd / 2; ++i) inv_freq[i] = std::pow(theta, -2.0 * i / hd);
      cuda::QkvSplitArgs a;
      a.n = n, a.width = width, a.num_heads = nh, a.num_kv_heads = kvh, a.head_dim = hd, a.v_head_dim = vhd;
      a.per_branch = per_branch, a.linear = linear, a.inv_freq = Upload(inv_freq), a.proj = Upload(proj);
      a.q_bias = Upload(qb), a.k_bias = Upload(kb), a.v_bias = Upload(vb), a.positions = Upload(pos);
      auto alloc = [](size_t count) {
        __nv_bfloat16* p = nullptr;
        cudaMalloc(&p, count * sizeof(__nv_bfloat16));
        return p;
      };
      a.q = alloc(n * nh * hd), a.k = alloc(n * kvh * hd), a.v = alloc(n * kvh * vhd);
      a.k_win = alloc(n * kvh * hd), a.v_win = alloc(n * kvh * vhd), a.k_src = alloc(n * kvh * hd), a.v_src = alloc(n * kvh * vhd);
      CUDA_OK(cudaMalloc(&a.gates, n * nh * 3 * sizeof(float)));
      CUDA_OK(cuda::LaunchQkvSplit(a, nullptr));
      // The CPU twin: models/nsa_model.cc's projection split.
      std::vector<float> q, k, v, g, kw, vw, kc, vc, ksrc;
      for (int t = 0; t < n; ++t) {
        const float* row = proj.data() + static_cast<size_t>(t) * width;
        auto take = [&](std::vector<float>& dst, int off, int count, const std::vector<float>* bias) {
          for (int i = 0; i < count; ++i) dst.push_back(row[off + i] + (bias ? (*bias)[i] : 0.f));
        };
        int off = 0;
        take(q, off, nh * hd, &qb), off += nh * hd;
        take(k, off, kvh * hd, &kb), off += kvh * hd;
        take(v, off, kvh * vhd, &vb), off += kvh * vhd;
        take(g, off, 3 * nh, nullptr), off += 3 * nh;
        if (per_branch) {
          take(kw, off, kvh * hd, nullptr), off += kvh * hd;
          take(vw, off, kvh * vhd, nullptr), off += kvh * vhd;
          take(kc, off, kvh * hd, nullptr), off += kvh * hd;
          take(vc, off, kvh * vhd, nullptr);
        }
        if (linear && !per_branch) ksrc.insert(ksrc.end(), k.end() - kvh * hd, k.end());  // keys before RoPE
        ref::ApplyRope(q.data() + static_cast<size_t>(t) * nh * hd, nh, hd, pos[t], theta);
        ref::ApplyRope(k.data() + static_cast<size_t>(t) * kvh * hd, kvh, hd, pos[t], theta);
        if (per_branch) {
          ref::ApplyRope(kw.data() + static_cast<size_t>(t) * kvh * hd, kvh, hd, pos[t], theta);
          if (!linear) ref::ApplyRope(kc.data() + static_cast<size_t>(t) * kvh * hd, kvh, hd, pos[t], theta);
        }
      }
      for (float& x : g) x = 1.0f / (1.0f + std::exp(-x));
      auto check = [&](const __nv_bfloat16* d, const std::vector<float>& want, const char* what) {
        EXPECT_LE(MaxRelErr(ToFloat(Download(d, want.size())), want), 4e-3)
            << what << (per_branch ? " per-branch" : " shared") << (linear ? " linear" : " mean");
      };
      check(a.q, q, "q");
      check(a.k, k, "k");
      check(a.v, v, "v");
      const std::vector<float> gates = Download(a.gates, g.size());
      EXPECT_LE(MaxRelErr(gates, g), 1e-6) << "gates";
      if (per_branch) {
        check(a.k_win, kw, "k_win");
        check(a.v_win, vw, "v_win");
        check(a.k_src, kc, "k_cmp");
        check(a.v_src, vc, "v_cmp");
      } else if (linear) {
        check(a.k_src, ksrc, "k_src (before RoPE)");
      }
      // The split writing the cache itself (QkvSplitArgs::write_cache, the runner's way) leaves
      // the pages as LaunchKvWrite copying the split's rows does, bit for bit; a padding token
      // (sequence -1) writes nothing.
      NsaParams p;
      p.kv_sharing = per_branch ? KvSharing::kPerBranch : KvSharing::kShared;
      p.compress_fn = linear ? CompressFn::kLinear : CompressFn::kMean;
      const KvLayout L = KvLayout::Make(2, kvh, hd, vhd, p);
      const int max_pages = static_cast<int>(*std::max_element(pos.begin(), pos.end()) / L.page_tokens + 1);
      std::vector<int32_t> seq(n), raw(2 * max_pages, 0), win(2 * max_pages, 0), src(2 * max_pages, 0);
      int pages = 1;  // page 0: the tables' unused entries
      for (int t = 0; t < n; ++t) {
        seq[t] = t == 2 ? -1 : t % 2;
        if (seq[t] < 0) continue;
        const int64_t at = seq[t] * int64_t{max_pages} + pos[t] / L.page_tokens;
        raw[at] = pages++;
        if (L.has_win) win[at] = pages++;
        if (L.has_src_k || L.has_src_v) src[at] = pages++;
      }
      std::vector<__nv_bfloat16> pool(static_cast<size_t>(pages) * L.page_elems);
      for (auto& x : pool) x = __float2bfloat16(std::uniform_real_distribution<float>(-1.f, 1.f)(rng));
      cuda::KvWriteArgs w;
      w.layout = L, w.layer = 1, w.num_tokens = n, w.token_seq = Upload(seq), w.token_pos = a.positions;
      w.raw_tables = Upload(raw), w.win_tables = L.has_win ? Upload(win) : nullptr;
      w.src_tables = L.has_src_k || L.has_src_v ? Upload(src) : nullptr, w.max_pages = max_pages;
      w.k = a.k, w.v = a.v, w.k_win = a.k_win, w.v_win = a.v_win, w.k_src = a.k_src, w.v_src = a.v_src;
      __nv_bfloat16* d_split = Upload(pool);
      w.pages = Upload(pool);
      a.write_cache = true, a.cache = w, a.cache.pages = d_split;
      CUDA_OK(cuda::LaunchQkvSplit(a, nullptr));
      CUDA_OK(cuda::LaunchKvWrite(w, nullptr));
      const std::vector<__nv_bfloat16> by_split = Download(d_split, pool.size()), by_copy = Download(w.pages, pool.size());
      EXPECT_EQ(0, std::memcmp(by_split.data(), by_copy.data(), pool.size() * sizeof(__nv_bfloat16)))
          << "pages written by the split differ from LaunchKvWrite's" << (per_branch ? " per-branch" : " shared")
          << (linear ? " linear" : " mean") << ", " << nh << " heads";
      EXPECT_NE(0, std::memcmp(by_split.data(), pool.data(), pool.size() * sizeof(__nv_bfloat16))) << "no page written";
      // A layout whose planes are not the split's is refused.
      cuda::QkvSplitArgs wrong = a;
      wrong.per_branch = !per_branch;
      EXPECT_EQ(cuda::LaunchQkvSplit(wrong, nullptr), cudaErrorInvalidValue);
      cudaGetLastError();
    }
  }
}

TEST(ModelOpsTest, SiluMulAndConversions) {
  std::mt19937 rng(3);
  for (int n : {1, 3, 64}) {
    const int M = 5632;
    const std::vector<float> gu = Random(static_cast<size_t>(n) * 2 * M, rng, 2.0f, false);
    std::vector<float> want(static_cast<size_t>(n) * M);
    for (int i = 0; i < n; ++i) ref::SiluMul(gu.data() + static_cast<size_t>(i) * 2 * M, gu.data() + static_cast<size_t>(i) * 2 * M + M, M, want.data() + static_cast<size_t>(i) * M);
    float* d_gu = Upload(gu);
    __nv_bfloat16* d_out = nullptr;
    CUDA_OK(cudaMalloc(&d_out, want.size() * sizeof(__nv_bfloat16)));
    CUDA_OK(cuda::LaunchSiluMul(d_gu, n, M, d_out, nullptr));
    EXPECT_LE(MaxRelErr(ToFloat(Download(d_out, want.size())), want), 4e-3) << n << " rows";
    cudaFree(d_gu);
    cudaFree(d_out);
  }
}

TEST(ModelOpsTest, GemmMatchesLinearAndAccumulates) {
  // Every shape of up to 8 rows runs both ways: the small-m kernel and cuBLASLt.
  std::mt19937 rng(4);
  for (bool small_m : {true, false}) {
    cuda::Gemm gemm;
    ASSERT_TRUE(gemm.Init().ok());
    gemm.set_small_m_rows(small_m ? cuda::kSmallGemmMaxRows : 0);
    for (auto [m, k, n] : {std::tuple{1, 2048, 4704}, std::tuple{7, 256, 2048}, std::tuple{8, 11008, 136},
                           std::tuple{3, 40, 9}, std::tuple{300, 1024, 96}}) {
      const std::vector<float> x = Random(static_cast<size_t>(m) * k, rng), w = Random(static_cast<size_t>(n) * k, rng, 0.05f),
                               y0 = Random(static_cast<size_t>(m) * n, rng, 1.0f, false);
      std::vector<float> want(static_cast<size_t>(m) * n);
      ref::Linear(x.data(), m, k, w.data(), n, nullptr, want.data());
      __nv_bfloat16 *d_x = Upload(ToBf(x)), *d_w = Upload(ToBf(w));
      float* d_y = Upload(y0);
      ASSERT_TRUE(gemm.Run(d_x, m, k, d_w, n, d_y, false, nullptr).ok());
      EXPECT_LE(MaxRelErr(Download(d_y, want.size()), want), 1e-4)
          << m << "x" << k << " . " << n << "x" << k << (small_m ? " (small-m kernel)" : " (cuBLASLt)");
      ASSERT_TRUE(gemm.Run(d_x, m, k, d_w, n, d_y, true, nullptr).ok());  // y = 2 x W^T now
      for (float& v : want) v *= 2;
      EXPECT_LE(MaxRelErr(Download(d_y, want.size()), want), 1e-4) << "accumulate";
      cudaFree(d_x);
      cudaFree(d_w);
      cudaFree(d_y);
    }
  }
  // A row stride wider than n (the runner's fused projections write into wider rows): the
  // columns past n stay as they were.
  for (bool small_m : {true, false}) {
    cuda::Gemm gemm;
    ASSERT_TRUE(gemm.Init().ok());
    gemm.set_small_m_rows(small_m ? cuda::kSmallGemmMaxRows : 0);
    const int m = 2, k = 64, n = 24, ldy = 40;
    const std::vector<float> x = Random(static_cast<size_t>(m) * k, rng), w = Random(static_cast<size_t>(n) * k, rng, 0.05f),
                             y0 = Random(static_cast<size_t>(m) * ldy, rng, 1.0f, false);
    std::vector<float> lin(static_cast<size_t>(m) * n);
    ref::Linear(x.data(), m, k, w.data(), n, nullptr, lin.data());
    std::vector<float> want = y0;
    for (int i = 0; i < m; ++i) {
      for (int j = 0; j < n; ++j) want[static_cast<size_t>(i) * ldy + j] = lin[static_cast<size_t>(i) * n + j];
    }
    __nv_bfloat16 *d_x = Upload(ToBf(x)), *d_w = Upload(ToBf(w));
    float* d_y = Upload(y0);
    ASSERT_TRUE(gemm.Run(d_x, m, k, d_w, n, d_y, false, nullptr, ldy).ok());
    EXPECT_LE(MaxRelErr(Download(d_y, want.size()), want), 1e-4) << (small_m ? "small-m kernel" : "cuBLASLt") << ", ldy";
    cudaFree(d_x);
    cudaFree(d_w);
    cudaFree(d_y);
  }
}

TEST(ModelOpsTest, SmallGemmSplitsMatchTheCpuTwin) {
  // Every split of a column's k across warps (1, 2, 4; NSA_SMALL_GEMM_SPLIT picks the default):
  // the product against ref::Linear, accumulating, and the fused SwiGLU bit for bit what the
  // same split's product and SiluMul give as two launches.
  std::mt19937 rng(12);
  for (int split : {1, 2, 4}) {
    for (auto [m, k, n] : {std::tuple{1, 5632, 2048}, std::tuple{3, 2048, 77}, std::tuple{8, 264, 13}, std::tuple{2, 8, 5}}) {
      const std::vector<float> x = Random(static_cast<size_t>(m) * k, rng), w = Random(static_cast<size_t>(n) * k, rng, 0.05f);
      std::vector<float> want(static_cast<size_t>(m) * n), gu(static_cast<size_t>(m) * 2 * n), silu(want.size());
      ref::Linear(x.data(), m, k, w.data(), n, nullptr, want.data());
      __nv_bfloat16 *d_x = Upload(ToBf(x)), *d_w = Upload(ToBf(w)), *d_fused = nullptr, *d_two = nullptr;
      float* d_y = Upload(std::vector<float>(want.size(), 0.f));
      CUDA_OK(cuda::LaunchSmallGemm(d_x, m, k, d_w, n, d_y, n, false, nullptr, split));
      EXPECT_LE(MaxRelErr(Download(d_y, want.size()), want), 1e-4) << "split " << split << ", " << m << "x" << k << " . " << n;
      CUDA_OK(cuda::LaunchSmallGemm(d_x, m, k, d_w, n, d_y, n, true, nullptr, split));
      for (float& v : want) v *= 2;
      EXPECT_LE(MaxRelErr(Download(d_y, want.size()), want), 1e-4) << "split " << split << ", accumulate";
      // SwiGLU with W's n rows as gate | up halves (n even) or skipped.
      if (n % 2 == 0) {
        const int half = n / 2;
        CUDA_OK(cudaMalloc(&d_fused, static_cast<size_t>(m) * half * sizeof(__nv_bfloat16)));
        CUDA_OK(cudaMalloc(&d_two, static_cast<size_t>(m) * half * sizeof(__nv_bfloat16)));
        CUDA_OK(cuda::LaunchSmallGemmSiluMul(d_x, m, k, d_w, half, d_fused, nullptr, split));
        CUDA_OK(cuda::LaunchSmallGemm(d_x, m, k, d_w, n, d_y, n, false, nullptr, split));
        CUDA_OK(cuda::LaunchSiluMul(d_y, m, half, d_two, nullptr));
        EXPECT_EQ(ToFloat(Download(d_fused, static_cast<size_t>(m) * half)), ToFloat(Download(d_two, static_cast<size_t>(m) * half)))
            << "split " << split << ": the fused SwiGLU differs from the product + SiluMul";
        cudaFree(d_fused);
        cudaFree(d_two);
      }
      cudaFree(d_x);
      cudaFree(d_w);
      cudaFree(d_y);
    }
  }
  // An unsupported split is refused.
  EXPECT_EQ(cudaErrorInvalidValue, cuda::LaunchSmallGemm(nullptr, 1, 8, nullptr, 1, nullptr, 1, false, nullptr, 3));
}

TEST(ModelOpsTest, GateUpProjectionWithSwiGluFusedEqualsTheTwoSteps) {
  // Gemm::RunSiluMul: one kernel for up to 8 rows (small-m), cuBLASLt then SiluMul above; both
  // against the CPU twin (ref::Linear, ref::SiluMul), and the fused kernel bit for bit what the
  // small-m GEMM and SiluMul give as two launches.
  std::mt19937 rng(8);
  for (auto [m, k, half] : {std::tuple{1, 2048, 5632}, std::tuple{5, 256, 300}, std::tuple{8, 1024, 77}, std::tuple{40, 128, 64}}) {
    const std::vector<float> x = Random(static_cast<size_t>(m) * k, rng), w = Random(static_cast<size_t>(2 * half) * k, rng, 0.05f);
    std::vector<float> lin(static_cast<size_t>(m) * 2 * half), want(static_cast<size_t>(m) * half);
    ref::Linear(x.data(), m, k, w.data(), 2 * half, nullptr, lin.data());
    for (int i = 0; i < m; ++i) {
      ref::SiluMul(lin.data() + static_cast<size_t>(i) * 2 * half, lin.data() + static_cast<size_t>(i) * 2 * half + half, half,
                   want.data() + static_cast<size_t>(i) * half);
    }
    __nv_bfloat16 *d_x = Upload(ToBf(x)), *d_w = Upload(ToBf(w)), *d_fused = nullptr, *d_two = nullptr;
    float* d_scratch = nullptr;
    CUDA_OK(cudaMalloc(&d_fused, want.size() * sizeof(__nv_bfloat16)));
    CUDA_OK(cudaMalloc(&d_two, want.size() * sizeof(__nv_bfloat16)));
    CUDA_OK(cudaMalloc(&d_scratch, lin.size() * sizeof(float)));
    cuda::Gemm gemm;
    ASSERT_TRUE(gemm.Init().ok());
    gemm.set_small_m_rows(cuda::kSmallGemmMaxRows);
    ASSERT_TRUE(gemm.RunSiluMul(d_x, m, k, d_w, half, d_scratch, d_fused, nullptr).ok());
    const std::vector<float> fused = ToFloat(Download(d_fused, want.size()));
    EXPECT_LE(MaxRelErr(fused, want), 8e-3) << m << " rows, k " << k << ", half " << half;
    // The two-step form: the product into scratch, then SiluMul.
    ASSERT_TRUE(gemm.Run(d_x, m, k, d_w, 2 * half, d_scratch, false, nullptr).ok());
    CUDA_OK(cuda::LaunchSiluMul(d_scratch, m, half, d_two, nullptr));
    const std::vector<float> two = ToFloat(Download(d_two, want.size()));
    EXPECT_EQ(fused, two) << m << " rows: the fused kernel differs from the small-m GEMM + SiluMul";
    cudaFree(d_x);
    cudaFree(d_w);
    cudaFree(d_fused);
    cudaFree(d_two);
    cudaFree(d_scratch);
  }
}

TEST(ModelOpsTest, DeviceRandomWeightsEqualTheHostsBitForBit) {
  const int64_t n = 100003;
  const uint64_t seed = 42, hash = HashName("model.layers.3.attn.q_proj.weight");
  __nv_bfloat16* d16 = nullptr;
  float* d32 = nullptr;
  CUDA_OK(cudaMalloc(&d16, n * sizeof(__nv_bfloat16)));
  CUDA_OK(cudaMalloc(&d32, n * sizeof(float)));
  CUDA_OK(cuda::LaunchRandomBf16(d16, n, seed, hash, 0.0f, 0.03f, nullptr));
  CUDA_OK(cuda::LaunchRandomFloat(d32, n, seed, hash, 1.0f, 0.1f, nullptr));
  const std::vector<float> got16 = ToFloat(Download(d16, n)), got32 = Download(d32, n);
  int64_t diff = 0;
  for (int64_t i = 0; i < n; ++i) {
    diff += got16[i] != Bf(RandomWeight(seed, hash, i, 0.0f, 0.03f));
    diff += got32[i] != Bf(RandomWeight(seed, hash, i, 1.0f, 0.1f));
  }
  EXPECT_EQ(diff, 0);
  cudaFree(d16);
  cudaFree(d32);
}

}  // namespace
}  // namespace nsa
