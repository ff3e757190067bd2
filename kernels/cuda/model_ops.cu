#include "kernels/cuda/model_ops.h"

#include <algorithm>

#include "kernels/cuda/pdl.cuh"

namespace nsa::cuda {
namespace {

__global__ void EmbedKernel(const int32_t* tokens, const __nv_bfloat16* table, int dim, float* x) {
  const __nv_bfloat16* row = table + static_cast<int64_t>(tokens[blockIdx.x]) * dim;
  float* out = x + static_cast<int64_t>(blockIdx.x) * dim;
  for (int j = threadIdx.x; j < dim; j += blockDim.x) out[j] = __bfloat162float(row[j]);
}

// The sum of every thread's v in the block (blockDim a multiple of 32, at most 1024), in a fixed
// order: warps by shuffles, then the warps' sums by the first warp. Every thread gets it. Once a
// kernel: a second call could overwrite warp_sums before every thread has read the first sum.
__device__ __forceinline__ float BlockSum(float v) {
  __shared__ float warp_sums[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    float w = threadIdx.x < blockDim.x / 32 ? warp_sums[threadIdx.x] : 0.f;
    for (int o = 16; o > 0; o >>= 1) w += __shfl_xor_sync(0xffffffffu, w, o);
    if (threadIdx.x == 0) warp_sums[0] = w;
  }
  __syncthreads();
  return warp_sums[0];
}

// One block a row: the sum of squares by a block reduction, then the scaled row. The generic
// form (any dim), for rows RmsNormVecKernel does not take.
__global__ void RmsNormKernel(const float* x, const int32_t* rows, int dim, const float* weight, float eps,
                              __nv_bfloat16* out) {
  ChainedWait();
  const int r = rows ? rows[blockIdx.x] : blockIdx.x;
  const float* xr = x + static_cast<int64_t>(r) * dim;
  float ss = 0.f;
  for (int j = threadIdx.x; j < dim; j += blockDim.x) ss += xr[j] * xr[j];
  const float inv = 1.0f / sqrtf(BlockSum(ss) / dim + eps);
  __nv_bfloat16* o = out + static_cast<int64_t>(blockIdx.x) * dim;
  for (int j = threadIdx.x; j < dim; j += blockDim.x) o[j] = __float2bfloat16(xr[j] * inv * weight[j]);
}

// The same for dim % 4 == 0 up to 4 kNormThreads kNormVecs with aligned rows, built for a decode
// step's single rows, where the generic form's two dependent passes over the row were most of
// its time (ncu, eighth session: 9.4 us a launch at 1.3b, one block): the norm's weights are
// read before the wait for the previous kernel (no kernel of a step writes weights, so pdl.cuh's
// rule holds), every float4 of the row is in flight at once and kept in registers for the
// scaled row, written 8 bytes a store.
constexpr int kNormThreads = 256, kNormVecs = 8;
__global__ void __launch_bounds__(kNormThreads) RmsNormVecKernel(const float* x, const int32_t* rows, int dim,
                                                                 const float* weight, float eps, __nv_bfloat16* out) {
  const int vecs = dim / 4;
  const float4* w4 = reinterpret_cast<const float4*>(weight);
  float4 wv[kNormVecs], xv[kNormVecs];
#pragma unroll
  for (int k = 0; k < kNormVecs; ++k) {
    const int v = threadIdx.x + k * kNormThreads;
    if (v < vecs) wv[k] = w4[v];
  }
  ChainedWait();
  const int r = rows ? rows[blockIdx.x] : blockIdx.x;
  const float4* x4 = reinterpret_cast<const float4*>(x + static_cast<int64_t>(r) * dim);
#pragma unroll
  for (int k = 0; k < kNormVecs; ++k) {
    const int v = threadIdx.x + k * kNormThreads;
    if (v < vecs) xv[k] = x4[v];
  }
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < kNormVecs; ++k) {
    if (threadIdx.x + k * kNormThreads < vecs) ss += xv[k].x * xv[k].x + xv[k].y * xv[k].y + xv[k].z * xv[k].z + xv[k].w * xv[k].w;
  }
  const float inv = 1.0f / sqrtf(BlockSum(ss) / dim + eps);
  uint2* o = reinterpret_cast<uint2*>(out + static_cast<int64_t>(blockIdx.x) * dim);
#pragma unroll
  for (int k = 0; k < kNormVecs; ++k) {
    const int v = threadIdx.x + k * kNormThreads;
    if (v >= vecs) continue;
    const __nv_bfloat162 lo = __floats2bfloat162_rn(xv[k].x * inv * wv[k].x, xv[k].y * inv * wv[k].y);
    const __nv_bfloat162 hi = __floats2bfloat162_rn(xv[k].z * inv * wv[k].z, xv[k].w * inv * wv[k].w);
    o[v] = make_uint2(*reinterpret_cast<const uint32_t*>(&lo), *reinterpret_cast<const uint32_t*>(&hi));
  }
}

// One rotated (or copied) pair of a head: elements i and i + dim / 2 of `in` (the head's row),
// plus the bias, rotated by cs and sn when `rope`, stored in bf16 into out's row and, when not
// null, the same row in the pages.
__device__ __forceinline__ void StorePair(const float* in, const float* bias, int i, int dim, bool rope, float cs, float sn,
                                          __nv_bfloat16* out, __nv_bfloat16* page_row) {
  const int half = dim / 2;
  float a = in[i], b = in[i + half];
  if (bias) a += bias[i], b += bias[i + half];
  if (rope) {
    const float ra = a * cs - b * sn, rb = b * cs + a * sn;
    a = ra, b = rb;
  }
  const __nv_bfloat16 ba = __float2bfloat16(a), bb = __float2bfloat16(b);
  out[i] = ba, out[i + half] = bb;
  if (page_row) page_row[i] = ba, page_row[i + half] = bb;
}

// grid (n, column blocks), kSplitThreads threads: a token's work items, in the row's order (q's
// head pairs, k's, v's, the 3 nh gates, then the per-branch keys and values or the linear
// compression's unrotated keys), spread over the token's blocks. An item is pair i of up to
// `group` consecutive heads of a segment, so that its angle's cos and sin (in double, as the
// CPU) are computed once for them: group 1 for a decode step's few tokens (about one pair a
// thread: one block's serial loops took 9.3 us a launch at 1.3b, ncu in the eighth session),
// more for a prefill chunk's thousands, where an angle a pair cost 1.2% of the time to first
// token (H200, eighth session call 4).
constexpr int kSplitThreads = 256;
__global__ void __launch_bounds__(kSplitThreads) QkvSplitKernel(QkvSplitArgs a, int group) {
  ChainedWait();
  const int t = blockIdx.x;
  const float* row = a.proj + static_cast<int64_t>(t) * a.width;
  const int nh = a.num_heads, kvh = a.num_kv_heads, hd = a.head_dim, vhd = a.v_head_dim;
  const int64_t position = a.positions[t];
  const float* q = row;
  const float* k = q + nh * hd;
  const float* v = k + kvh * hd;
  const float* g = v + kvh * vhd;
  const float* k_win = g + 3 * nh;
  const float* v_win = k_win + kvh * hd;
  const float* k_cmp = v_win + kvh * vhd;
  const float* v_cmp = k_cmp + kvh * hd;
  const int64_t tq = static_cast<int64_t>(t) * nh, tk = static_cast<int64_t>(t) * kvh;
  const int q_groups = (nh + group - 1) / group, kv_groups = (kvh + group - 1) / group;
  for (int idx = blockIdx.y * blockDim.x + threadIdx.x;; idx += gridDim.y * blockDim.x) {
    // The item's segment: `rest` counts down through the segments' items in the row's order.
    int rest = idx;
    auto in = [&rest](int items) {
      if (rest < items) return true;
      rest -= items;
      return false;
    };
    // Pair i of the item's heads (rest within the segment) from `src`'s rows into `out`'s, and
    // into their page rows of `plane` through `tables` when the split writes the cache and the
    // layout has it.
    auto pairs = [&](const float* src, const float* bias, int heads, int dim, bool rope, __nv_bfloat16* out,
                     const int32_t* tables, KvPlane plane, bool has, bool value) {
      const int i = rest % (dim / 2), h0 = rest / (dim / 2) * group, h1 = h0 + group < heads ? h0 + group : heads;
      float cs = 1.f, sn = 0.f;
      if (rope) {
        const double angle = static_cast<double>(position) * a.inv_freq[i];
        cs = static_cast<float>(cos(angle)), sn = static_cast<float>(sin(angle));
      }
      for (int h = h0; h < h1; ++h) {
        __nv_bfloat16* page_row = a.write_cache && has ? KvRowInPages(a.cache, t, tables, plane, h, value) : nullptr;
        StorePair(src + h * dim, bias ? bias + h * dim : nullptr, i, dim, rope, cs, sn, out + h * dim, page_row);
      }
    };
    const KvWriteArgs& c = a.cache;
    const KvLayout& L = c.layout;
    if (in(q_groups * (hd / 2))) {
      pairs(q, a.q_bias, nh, hd, true, a.q + tq * hd, nullptr, KvPlane::kSel, false, false);
    } else if (in(kv_groups * (hd / 2))) {
      pairs(k, a.k_bias, kvh, hd, true, a.k + tk * hd, c.raw_tables, KvPlane::kSel, true, false);
    } else if (in(kv_groups * (vhd / 2))) {
      pairs(v, a.v_bias, kvh, vhd, false, a.v + tk * vhd, c.raw_tables, KvPlane::kSel, true, true);
    } else if (in(3 * nh)) {
      a.gates[tq * 3 + rest] = 1.0f / (1.0f + expf(-g[rest]));
    } else if (a.per_branch && in(kv_groups * (hd / 2))) {
      pairs(k_win, nullptr, kvh, hd, true, a.k_win + tk * hd, c.win_tables, KvPlane::kWin, L.has_win, false);
    } else if (a.per_branch && in(kv_groups * (vhd / 2))) {
      pairs(v_win, nullptr, kvh, vhd, false, a.v_win + tk * vhd, c.win_tables, KvPlane::kWin, L.has_win, true);
    } else if (a.per_branch && in(kv_groups * (hd / 2))) {
      pairs(k_cmp, nullptr, kvh, hd, !a.linear, a.k_src + tk * hd, c.src_tables, KvPlane::kSrc, L.has_src_k, false);
    } else if (a.per_branch && in(kv_groups * (vhd / 2))) {
      pairs(v_cmp, nullptr, kvh, vhd, false, a.v_src + tk * vhd, c.src_tables, KvPlane::kSrc, L.has_src_v, true);
    } else if (!a.per_branch && a.linear && in(kv_groups * (hd / 2))) {
      // The linear compression's keys, before RoPE.
      pairs(k, a.k_bias, kvh, hd, false, a.k_src + tk * hd, c.src_tables, KvPlane::kSrc, L.has_src_k, false);
    } else {
      return;  // past the token's items
    }
  }
}

// The work items of one token of QkvSplitKernel with `group` heads an item.
int SplitItems(const QkvSplitArgs& a, int group) {
  const int qg = (a.num_heads + group - 1) / group, kvg = (a.num_kv_heads + group - 1) / group;
  const int kv_items = kvg * (a.head_dim / 2 + a.v_head_dim / 2);
  return qg * (a.head_dim / 2) + kv_items + 3 * a.num_heads +
         (a.per_branch ? 2 * kv_items : a.linear ? kvg * (a.head_dim / 2) : 0);
}

// grid (rows, column blocks): a decode step has few rows, so the columns spread over blocks.
__global__ void SiluMulKernel(const float* gu, int M, __nv_bfloat16* out) {
  ChainedWait();
  const float* g = gu + static_cast<int64_t>(blockIdx.x) * 2 * M;
  __nv_bfloat16* o = out + static_cast<int64_t>(blockIdx.x) * M;
  for (int j = blockIdx.y * blockDim.x + threadIdx.x; j < M; j += gridDim.y * blockDim.x) {
    o[j] = __float2bfloat16(g[j] / (1.0f + expf(-g[j])) * g[M + j]);
  }
}

__global__ void ToBf16Kernel(const float* in, int64_t count, __nv_bfloat16* out) {
  ChainedWait();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = __float2bfloat16(in[i]);
  }
}

__global__ void ToFloatKernel(const __nv_bfloat16* in, int64_t count, float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = __bfloat162float(in[i]);
  }
}

__device__ uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// models/presets.cc RandomWeight, operation for operation (double uniform, float result).
__device__ float RandomWeight(uint64_t seed, uint64_t name_hash, int64_t index, float mean, float std) {
  const uint64_t bits = SplitMix(SplitMix(seed ^ name_hash) + static_cast<uint64_t>(index));
  const double u = (bits >> 11) * (1.0 / 9007199254740992.0);
  return __fadd_rn(mean, __fmul_rn(std, static_cast<float>((2.0 * u - 1.0) * sqrt(3.0))));
}

template <typename T>
__global__ void RandomKernel(T* out, int64_t count, uint64_t seed, uint64_t name_hash, float mean, float std) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    const __nv_bfloat16 b = __float2bfloat16(RandomWeight(seed, name_hash, i, mean, std));
    if constexpr (sizeof(T) == 4) {
      out[i] = __bfloat162float(b);
    } else {
      out[i] = b;
    }
  }
}

int Blocks(int64_t count) { return static_cast<int>(std::min<int64_t>((count + 255) / 256, 8192)); }

}  // namespace

cudaError_t LaunchEmbed(const int32_t* tokens, int n, const __nv_bfloat16* table, int dim, float* x, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  EmbedKernel<<<n, 256, 0, stream>>>(tokens, table, dim, x);
  return cudaGetLastError();
}

cudaError_t LaunchRmsNorm(const float* x, const int32_t* rows, int n, int dim, const float* weight, float eps,
                          __nv_bfloat16* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const bool vec = dim % 4 == 0 && dim <= 4 * kNormThreads * kNormVecs && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(weight) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 8 == 0;
  if (vec) return LaunchChained(RmsNormVecKernel, n, kNormThreads, 0, stream, x, rows, dim, weight, eps, out);
  return LaunchChained(RmsNormKernel, n, 256, 0, stream, x, rows, dim, weight, eps, out);
}

cudaError_t LaunchQkvSplit(const QkvSplitArgs& a, cudaStream_t stream) {
  if (a.n == 0) return cudaSuccess;
  if (a.head_dim % 2 != 0 || a.v_head_dim % 2 != 0) return cudaErrorInvalidValue;
  if (!a.inv_freq) return cudaErrorInvalidValue;
  if (a.write_cache) {
    const KvWriteArgs& c = a.cache;
    const KvLayout& L = c.layout;
    if (!c.token_seq || !c.token_pos || !c.raw_tables || !c.pages || c.max_pages < 1 || c.num_tokens < a.n) {
      return cudaErrorInvalidValue;
    }
    if (c.layer < 0 || c.layer >= L.num_layers || L.page_tokens < 1) return cudaErrorInvalidValue;
    if ((L.has_win && !c.win_tables) || ((L.has_src_k || L.has_src_v) && !c.src_tables)) return cudaErrorInvalidValue;
    // The split writes the rows LaunchKvWrite copies: the layout's planes must be the ones it makes.
    if (L.num_kv_heads != a.num_kv_heads || L.head_dim != a.head_dim || L.v_head_dim != a.v_head_dim ||
        L.has_win != a.per_branch || L.has_src_v != a.per_branch || L.has_src_k != (a.per_branch || a.linear)) {
      return cudaErrorInvalidValue;
    }
  }
  if ((a.per_branch && (!a.k_win || !a.v_win || !a.k_src || !a.v_src)) || (a.linear && !a.k_src)) return cudaErrorInvalidValue;
  // Heads an item: 1 for launches of fewer than 16 tokens (decode steps of small batches: the
  // most threads), 16 for more (prefill chunks, large batches: an angle a pair there cost more
  // than the spread over more threads gained).
  const int group = a.n >= 16 ? 16 : 1;
  const int column_blocks = std::min((SplitItems(a, group) + kSplitThreads - 1) / kSplitThreads, 64);
  return LaunchChained(QkvSplitKernel, dim3(a.n, column_blocks), kSplitThreads, 0, stream, a, group);
}

cudaError_t LaunchSiluMul(const float* gu, int n, int M, __nv_bfloat16* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int column_blocks = std::max(1, std::min((M + 255) / 256, 1024 / std::max(n, 1)));
  return LaunchChained(SiluMulKernel, dim3(n, column_blocks), 256, 0, stream, gu, M, out);
}

cudaError_t LaunchToBf16(const float* in, int64_t count, __nv_bfloat16* out, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  return LaunchChained(ToBf16Kernel, Blocks(count), 256, 0, stream, in, count, out);
}

cudaError_t LaunchToFloat(const __nv_bfloat16* in, int64_t count, float* out, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  ToFloatKernel<<<Blocks(count), 256, 0, stream>>>(in, count, out);
  return cudaGetLastError();
}

cudaError_t LaunchRandomBf16(__nv_bfloat16* out, int64_t count, uint64_t seed, uint64_t name_hash, float mean, float std,
                             cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  RandomKernel<<<Blocks(count), 256, 0, stream>>>(out, count, seed, name_hash, mean, std);
  return cudaGetLastError();
}

cudaError_t LaunchRandomFloat(float* out, int64_t count, uint64_t seed, uint64_t name_hash, float mean, float std,
                              cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  RandomKernel<<<Blocks(count), 256, 0, stream>>>(out, count, seed, name_hash, mean, std);
  return cudaGetLastError();
}

}  // namespace nsa::cuda
