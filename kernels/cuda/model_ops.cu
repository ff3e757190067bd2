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

// One block a row: the sum of squares by a block reduction, then the scaled row.
__global__ void RmsNormKernel(const float* x, const int32_t* rows, int dim, const float* weight, float eps,
                              __nv_bfloat16* out) {
  ChainedWait();
  const int r = rows ? rows[blockIdx.x] : blockIdx.x;
  const float* xr = x + static_cast<int64_t>(r) * dim;
  float ss = 0.f;
  for (int j = threadIdx.x; j < dim; j += blockDim.x) ss += xr[j] * xr[j];
  __shared__ float warp_sums[32];
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < blockDim.x / 32 ? warp_sums[threadIdx.x] : 0.f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) warp_sums[0] = v;
  }
  __syncthreads();
  const float inv = 1.0f / sqrtf(warp_sums[0] / dim + eps);
  __nv_bfloat16* o = out + static_cast<int64_t>(blockIdx.x) * dim;
  for (int j = threadIdx.x; j < dim; j += blockDim.x) o[j] = __float2bfloat16(xr[j] * inv * weight[j]);
}

// Rotates heads of `dim` in place in `row` (fp32) and stores bf16; cs/sn hold the angles' cos
// and sin for this token ([dim / 2]).
__device__ void StoreHeads(const float* in, const float* bias, int heads, int dim, bool rope, const float* cs, const float* sn,
                           __nv_bfloat16* out) {
  const int half = dim / 2;
  for (int idx = threadIdx.x; idx < heads * half; idx += blockDim.x) {
    const int h = idx / half, i = idx % half;
    float a = in[h * dim + i], b = in[h * dim + i + half];
    if (bias) a += bias[h * dim + i], b += bias[h * dim + i + half];
    if (rope) {
      const float ra = a * cs[i] - b * sn[i], rb = b * cs[i] + a * sn[i];
      a = ra, b = rb;
    }
    out[h * dim + i] = __float2bfloat16(a);
    out[h * dim + i + half] = __float2bfloat16(b);
  }
}

// grid (n), 256 threads.
__global__ void QkvSplitKernel(QkvSplitArgs a) {
  ChainedWait();
  const int t = blockIdx.x;
  const float* row = a.proj + static_cast<int64_t>(t) * a.width;
  const int nh = a.num_heads, kvh = a.num_kv_heads, hd = a.head_dim, vhd = a.v_head_dim;
  __shared__ float cs[128], sn[128];  // head_dim <= 256
  for (int i = threadIdx.x; i < hd / 2; i += blockDim.x) {
    const double angle = static_cast<double>(a.positions[t]) * a.inv_freq[i];
    cs[i] = static_cast<float>(cos(angle));
    sn[i] = static_cast<float>(sin(angle));
  }
  __syncthreads();
  const float* q = row;
  const float* k = q + nh * hd;
  const float* v = k + kvh * hd;
  const float* g = v + kvh * vhd;
  StoreHeads(q, a.q_bias, nh, hd, true, cs, sn, a.q + static_cast<int64_t>(t) * nh * hd);
  StoreHeads(k, a.k_bias, kvh, hd, true, cs, sn, a.k + static_cast<int64_t>(t) * kvh * hd);
  StoreHeads(v, a.v_bias, kvh, vhd, false, cs, sn, a.v + static_cast<int64_t>(t) * kvh * vhd);
  for (int j = threadIdx.x; j < 3 * nh; j += blockDim.x) a.gates[static_cast<int64_t>(t) * 3 * nh + j] = 1.0f / (1.0f + expf(-g[j]));
  if (a.per_branch) {
    const float* k_win = g + 3 * nh;
    const float* v_win = k_win + kvh * hd;
    const float* k_cmp = v_win + kvh * vhd;
    const float* v_cmp = k_cmp + kvh * hd;
    StoreHeads(k_win, nullptr, kvh, hd, true, cs, sn, a.k_win + static_cast<int64_t>(t) * kvh * hd);
    StoreHeads(v_win, nullptr, kvh, vhd, false, cs, sn, a.v_win + static_cast<int64_t>(t) * kvh * vhd);
    StoreHeads(k_cmp, nullptr, kvh, hd, !a.linear, cs, sn, a.k_src + static_cast<int64_t>(t) * kvh * hd);
    StoreHeads(v_cmp, nullptr, kvh, vhd, false, cs, sn, a.v_src + static_cast<int64_t>(t) * kvh * vhd);
  } else if (a.linear) {
    StoreHeads(k, a.k_bias, kvh, hd, false, cs, sn, a.k_src + static_cast<int64_t>(t) * kvh * hd);
  }
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
  return LaunchChained(RmsNormKernel, n, 256, 0, stream, x, rows, dim, weight, eps, out);
}

cudaError_t LaunchQkvSplit(const QkvSplitArgs& a, cudaStream_t stream) {
  if (a.n == 0) return cudaSuccess;
  if (a.head_dim > 256 || a.head_dim % 2 != 0 || a.v_head_dim % 2 != 0) return cudaErrorInvalidValue;
  if (!a.inv_freq) return cudaErrorInvalidValue;
  if ((a.per_branch && (!a.k_win || !a.v_win || !a.k_src || !a.v_src)) || (a.linear && !a.k_src)) return cudaErrorInvalidValue;
  return LaunchChained(QkvSplitKernel, a.n, 256, 0, stream, a);
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
