// Y = X W^T for a few rows of X (decode steps of small batches): S warps per output column (2 by
// default) read that row of W once, 16 bytes a lane, each a share of it, and dot it with every
// row of X (cached in L1), so the step streams the weights at close to the memory's bandwidth.
// cuBLASLt takes the larger m.
#include "kernels/cuda/small_gemm.h"

#include <cstdlib>

#include "kernels/cuda/pdl.cuh"

namespace nsa::cuda {
namespace {

constexpr int kWarps = 8;

__device__ __forceinline__ void Unpack(const uint4& v, float (&f)[8]) {
  const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 x = __bfloat1622float2(p[i]);
    f[2 * i] = x.x, f[2 * i + 1] = x.y;
  }
}

// A warp's share of the dot products of one W row with every row of X: acc[i] += X[i] . W[col]
// over the row's 16-byte vectors lane + 32 (sub + S r), r = 0, 1, ... (warp sub of the S that
// share the row: each reads 512 contiguous bytes a round, the S together S x 512).
template <int M, int S>
__device__ __forceinline__ void DotRows(const __nv_bfloat16* x, int k, const __nv_bfloat16* wrow, int sub, float (&acc)[M]) {
  const int lane = threadIdx.x % 32;
  const uint4* wr = reinterpret_cast<const uint4*>(wrow);
  const uint4* xr = reinterpret_cast<const uint4*>(x);
  const int vecs = k / 8, xstride = k / 8;
#pragma unroll 4
  for (int v = lane + 32 * sub; v < vecs; v += 32 * S) {
    float wf[8];
    Unpack(__ldcs(wr + v), wf);  // each weight is read once a step: do not keep it in L1
#pragma unroll
    for (int i = 0; i < M; ++i) {
      float xf[8];
      Unpack(__ldg(xr + static_cast<size_t>(i) * xstride + v), xf);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[i] = fmaf(xf[e], wf[e], acc[i]);
    }
  }
#pragma unroll
  for (int i = 0; i < M; ++i) {
    for (int o = 16; o > 0; o /= 2) acc[i] += __shfl_xor_sync(0xffffffff, acc[i], o);
  }
}

// The S warps of a column add their shares, in warp order (the same floats every run): lane 0
// of the column's first warp gets the sums in acc. Every thread of the block calls it.
template <int M, int S>
__device__ __forceinline__ void ReduceShares(float (&acc)[M]) {
  if constexpr (S > 1) {
    __shared__ float shares[kWarps][M];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
#pragma unroll
      for (int i = 0; i < M; ++i) shares[warp][i] = acc[i];
    }
    __syncthreads();
    if (warp % S == 0 && lane == 0) {
#pragma unroll
      for (int i = 0; i < M; ++i) {
        float sum = shares[warp][i];
        for (int s = 1; s < S; ++s) sum += shares[warp + s][i];
        acc[i] = sum;
      }
    }
  }
}

// S warps an output column (each a share of its k): y[i][col] (+)= X[i] . W[col].
template <int M, int S>
__global__ void __launch_bounds__(kWarps * 32) SmallGemmKernel(const __nv_bfloat16* x, int k, const __nv_bfloat16* w, int n,
                                                                  float* y, int ldy, bool accumulate) {
  ChainedWait();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int col = blockIdx.x * (kWarps / S) + warp / S;
  float acc[M] = {};
  if (col < n) DotRows<M, S>(x, k, w + static_cast<size_t>(col) * k, warp % S, acc);
  ReduceShares<M, S>(acc);
  if (col < n && warp % S == 0 && lane == 0) {
#pragma unroll
    for (int i = 0; i < M; ++i) {
      float* out = y + static_cast<size_t>(i) * ldy + col;
      *out = accumulate ? *out + acc[i] : acc[i];
    }
  }
}

// S warps an output column j of SwiGLU: out[i][j] = bf16(silu(X[i] . W[j]) (X[i] . W[half + j])),
// the same floats as SmallGemmKernel<M, S> into [m][2 half] then SiluMulKernel (model_ops.cu).
template <int M, int S>
__global__ void __launch_bounds__(kWarps * 32) SmallGemmSiluMulKernel(const __nv_bfloat16* x, int k, const __nv_bfloat16* w,
                                                                         int half, __nv_bfloat16* out) {
  ChainedWait();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int col = blockIdx.x * (kWarps / S) + warp / S;
  float gate[M] = {}, up[M] = {};
  if (col < half) {
    DotRows<M, S>(x, k, w + static_cast<size_t>(col) * k, warp % S, gate);
    DotRows<M, S>(x, k, w + static_cast<size_t>(half + col) * k, warp % S, up);
  }
  ReduceShares<M, S>(gate);
  __syncthreads();  // the shares' shared memory is reused
  ReduceShares<M, S>(up);
  if (col < half && warp % S == 0 && lane == 0) {
#pragma unroll
    for (int i = 0; i < M; ++i) {
      const float g = gate[i];
      out[static_cast<size_t>(i) * half + col] = __float2bfloat16(g / (1.0f + expf(-g)) * up[i]);
    }
  }
}

template <int M, int S>
cudaError_t Launch(const __nv_bfloat16* x, int k, const __nv_bfloat16* w, int n, float* y, int ldy, bool accumulate,
                   cudaStream_t stream) {
  constexpr int cols = kWarps / S;
  return LaunchChained(SmallGemmKernel<M, S>, (n + cols - 1) / cols, kWarps * 32, 0, stream, x, k, w, n, y, ldy,
                       accumulate);
}

template <int M, int S>
cudaError_t LaunchSiluMul(const __nv_bfloat16* x, int k, const __nv_bfloat16* w, int half, __nv_bfloat16* out,
                          cudaStream_t stream) {
  constexpr int cols = kWarps / S;
  return LaunchChained(SmallGemmSiluMulKernel<M, S>, (half + cols - 1) / cols, kWarps * 32, 0, stream, x, k, w, half,
                       out);
}

// The split's template instance for m rows.
template <int S>
cudaError_t LaunchRows(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w, int n, float* y, int ldy,
                       bool accumulate, cudaStream_t stream) {
  switch (m) {
    case 1: return Launch<1, S>(x, k, w, n, y, ldy, accumulate, stream);
    case 2: return Launch<2, S>(x, k, w, n, y, ldy, accumulate, stream);
    case 3: return Launch<3, S>(x, k, w, n, y, ldy, accumulate, stream);
    case 4: return Launch<4, S>(x, k, w, n, y, ldy, accumulate, stream);
    case 5: return Launch<5, S>(x, k, w, n, y, ldy, accumulate, stream);
    case 6: return Launch<6, S>(x, k, w, n, y, ldy, accumulate, stream);
    case 7: return Launch<7, S>(x, k, w, n, y, ldy, accumulate, stream);
    default: return Launch<8, S>(x, k, w, n, y, ldy, accumulate, stream);
  }
}
template <int S>
cudaError_t LaunchSiluMulRows(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w, int half, __nv_bfloat16* out,
                              cudaStream_t stream) {
  switch (m) {
    case 1: return LaunchSiluMul<1, S>(x, k, w, half, out, stream);
    case 2: return LaunchSiluMul<2, S>(x, k, w, half, out, stream);
    case 3: return LaunchSiluMul<3, S>(x, k, w, half, out, stream);
    case 4: return LaunchSiluMul<4, S>(x, k, w, half, out, stream);
    case 5: return LaunchSiluMul<5, S>(x, k, w, half, out, stream);
    case 6: return LaunchSiluMul<6, S>(x, k, w, half, out, stream);
    case 7: return LaunchSiluMul<7, S>(x, k, w, half, out, stream);
    default: return LaunchSiluMul<8, S>(x, k, w, half, out, stream);
  }
}

// 0: the process's default: NSA_SMALL_GEMM_SPLIT = 1, 2 or 4, else 2 (H200, 1.3b decode steps,
// seventh session: 1 x 512 1.709 ms at 2 against 1.779 at 1 and 1.804 at 4; bench/NOTES.md).
int SplitOf(int split) {
  static const int from_env = [] {
    const char* v = std::getenv("NSA_SMALL_GEMM_SPLIT");
    const int s = v ? std::atoi(v) : 2;
    return s == 1 || s == 4 ? s : 2;
  }();
  return split == 0 ? from_env : split;
}

}  // namespace

bool SmallGemmApplies(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w) {
  return m >= 1 && m <= kSmallGemmMaxRows && k % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(w) % 16 == 0;
}

cudaError_t LaunchSmallGemm(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w, int n, float* y, int ldy,
                            bool accumulate, cudaStream_t stream, int split) {
  if (!SmallGemmApplies(x, m, k, w) || n < 1 || ldy < n) return cudaErrorInvalidValue;
  switch (SplitOf(split)) {
    case 1: return LaunchRows<1>(x, m, k, w, n, y, ldy, accumulate, stream);
    case 2: return LaunchRows<2>(x, m, k, w, n, y, ldy, accumulate, stream);
    case 4: return LaunchRows<4>(x, m, k, w, n, y, ldy, accumulate, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t LaunchSmallGemmSiluMul(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w, int half,
                                   __nv_bfloat16* out, cudaStream_t stream, int split) {
  if (!SmallGemmApplies(x, m, k, w) || half < 1 || !out) return cudaErrorInvalidValue;
  switch (SplitOf(split)) {
    case 1: return LaunchSiluMulRows<1>(x, m, k, w, half, out, stream);
    case 2: return LaunchSiluMulRows<2>(x, m, k, w, half, out, stream);
    case 4: return LaunchSiluMulRows<4>(x, m, k, w, half, out, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace nsa::cuda
