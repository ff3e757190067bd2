// RMSNorm of one fp32 row into bf16 by a block of kThreads threads, for rows of dim % 4 == 0 up
// to kMaxDim: the norm's weights read into registers first (before a kernel's PDL wait: no
// kernel of a step writes weights, so pdl.cuh's rule holds), every float4 of the row in flight
// at once and kept in registers for the scaled row. Shared by RMSNorm's own kernel
// (model_ops.cu) and the small-m GEMM that normalises its input rows itself (small_gemm.cu),
// so that both give the same bf16, bit for bit: the same threads sum the same squares in the
// same order.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace nsa::cuda::norm {

constexpr int kThreads = 256, kVecs = 8, kMaxDim = 4 * kThreads * kVecs;

// Whether a row of `dim` with these pointers takes this form.
inline bool Applies(const float* x, int dim, const float* weight) {
  return dim > 0 && dim % 4 == 0 && dim <= kMaxDim && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(weight) % 16 == 0;
}

// The sum of every thread's v in the block (blockDim a multiple of 32, at most 1024), in a fixed
// order: warps by shuffles, then the warps' sums by the first warp. Every thread gets it; the
// block may call it again at once (the last barrier keeps the next call's writes behind this
// call's reads).
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
  const float total = warp_sums[0];
  __syncthreads();
  return total;
}

// This thread's float4s of the weights (vector threadIdx.x + k kThreads, k < kVecs).
__device__ __forceinline__ void LoadWeights(const float* weight, int dim, float4 (&wv)[kVecs]) {
  const float4* w4 = reinterpret_cast<const float4*>(weight);
#pragma unroll
  for (int k = 0; k < kVecs; ++k) {
    const int v = threadIdx.x + k * kThreads;
    if (v < dim / 4) wv[k] = w4[v];
  }
}

// Row x (dim floats, 16-byte aligned) normalised: store(v, bits) receives vector v's four bf16
// (8 bytes) for each of this thread's vectors. Every thread of the block calls it.
template <typename Store>
__device__ __forceinline__ void Row(const float* x, int dim, const float4 (&wv)[kVecs], float eps, Store store) {
  const int vecs = dim / 4;
  const float4* x4 = reinterpret_cast<const float4*>(x);
  float4 xv[kVecs];
#pragma unroll
  for (int k = 0; k < kVecs; ++k) {
    const int v = threadIdx.x + k * kThreads;
    if (v < vecs) xv[k] = x4[v];
  }
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < kVecs; ++k) {
    if (threadIdx.x + k * kThreads < vecs) ss += xv[k].x * xv[k].x + xv[k].y * xv[k].y + xv[k].z * xv[k].z + xv[k].w * xv[k].w;
  }
  const float inv = 1.0f / sqrtf(BlockSum(ss) / dim + eps);
#pragma unroll
  for (int k = 0; k < kVecs; ++k) {
    const int v = threadIdx.x + k * kThreads;
    if (v >= vecs) continue;
    const __nv_bfloat162 lo = __floats2bfloat162_rn(xv[k].x * inv * wv[k].x, xv[k].y * inv * wv[k].y);
    const __nv_bfloat162 hi = __floats2bfloat162_rn(xv[k].z * inv * wv[k].z, xv[k].w * inv * wv[k].w);
    store(v, make_uint2(*reinterpret_cast<const uint32_t*>(&lo), *reinterpret_cast<const uint32_t*>(&hi)));
  }
}

}  // namespace nsa::cuda::norm
