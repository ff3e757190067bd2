// Y = X W^T for a few rows of X (decode steps of small batches): a warp per output column reads
// that row of W once, 16 bytes a lane, and dots it with every row of X (cached in L1), so the
// step streams the weights at close to the memory's bandwidth. cuBLASLt takes the larger m.
#include "kernels/cuda/small_gemm.h"

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

// A warp's dot products of one W row with every row of X: acc[i] += X[i] . W[col].
template <int M>
__device__ __forceinline__ void DotRows(const __nv_bfloat16* x, int k, const __nv_bfloat16* wrow, float (&acc)[M]) {
  const int lane = threadIdx.x % 32;
  const uint4* wr = reinterpret_cast<const uint4*>(wrow);
  const uint4* xr = reinterpret_cast<const uint4*>(x);
  const int vecs = k / 8, xstride = k / 8;
#pragma unroll 4
  for (int v = lane; v < vecs; v += 32) {
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

// A warp an output column: y[i][col] (+)= X[i] . W[col].
template <int M>
__global__ void __launch_bounds__(kWarps * 32) SmallGemmKernel(const __nv_bfloat16* x, int k, const __nv_bfloat16* w, int n,
                                                                  float* y, int ldy, bool accumulate) {
  ChainedWait();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int col = blockIdx.x * kWarps + warp;
  if (col >= n) return;
  float acc[M] = {};
  DotRows<M>(x, k, w + static_cast<size_t>(col) * k, acc);
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < M; ++i) {
      float* out = y + static_cast<size_t>(i) * ldy + col;
      *out = accumulate ? *out + acc[i] : acc[i];
    }
  }
}

// A warp an output column j of SwiGLU: out[i][j] = bf16(silu(X[i] . W[j]) (X[i] . W[half + j])),
// the same floats as SmallGemmKernel into [m][2 half] then SiluMulKernel (model_ops.cu).
template <int M>
__global__ void __launch_bounds__(kWarps * 32) SmallGemmSiluMulKernel(const __nv_bfloat16* x, int k, const __nv_bfloat16* w,
                                                                         int half, __nv_bfloat16* out) {
  ChainedWait();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int col = blockIdx.x * kWarps + warp;
  if (col >= half) return;
  float gate[M] = {}, up[M] = {};
  DotRows<M>(x, k, w + static_cast<size_t>(col) * k, gate);
  DotRows<M>(x, k, w + static_cast<size_t>(half + col) * k, up);
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < M; ++i) {
      const float g = gate[i];
      out[static_cast<size_t>(i) * half + col] = __float2bfloat16(g / (1.0f + expf(-g)) * up[i]);
    }
  }
}

template <int M>
cudaError_t Launch(const __nv_bfloat16* x, int k, const __nv_bfloat16* w, int n, float* y, int ldy, bool accumulate,
                   cudaStream_t stream) {
  return LaunchChained(SmallGemmKernel<M>, (n + kWarps - 1) / kWarps, kWarps * 32, 0, stream, x, k, w, n, y, ldy,
                       accumulate);
}

template <int M>
cudaError_t LaunchSiluMul(const __nv_bfloat16* x, int k, const __nv_bfloat16* w, int half, __nv_bfloat16* out,
                          cudaStream_t stream) {
  return LaunchChained(SmallGemmSiluMulKernel<M>, (half + kWarps - 1) / kWarps, kWarps * 32, 0, stream, x, k, w, half,
                       out);
}

}  // namespace

bool SmallGemmApplies(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w) {
  return m >= 1 && m <= kSmallGemmMaxRows && k % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(w) % 16 == 0;
}

cudaError_t LaunchSmallGemm(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w, int n, float* y, int ldy,
                            bool accumulate, cudaStream_t stream) {
  if (!SmallGemmApplies(x, m, k, w) || n < 1 || ldy < n) return cudaErrorInvalidValue;
  switch (m) {
    case 1: return Launch<1>(x, k, w, n, y, ldy, accumulate, stream);
    case 2: return Launch<2>(x, k, w, n, y, ldy, accumulate, stream);
    case 3: return Launch<3>(x, k, w, n, y, ldy, accumulate, stream);
    case 4: return Launch<4>(x, k, w, n, y, ldy, accumulate, stream);
    case 5: return Launch<5>(x, k, w, n, y, ldy, accumulate, stream);
    case 6: return Launch<6>(x, k, w, n, y, ldy, accumulate, stream);
    case 7: return Launch<7>(x, k, w, n, y, ldy, accumulate, stream);
    default: return Launch<8>(x, k, w, n, y, ldy, accumulate, stream);
  }
}

cudaError_t LaunchSmallGemmSiluMul(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w, int half,
                                   __nv_bfloat16* out, cudaStream_t stream) {
  if (!SmallGemmApplies(x, m, k, w) || half < 1 || !out) return cudaErrorInvalidValue;
  switch (m) {
    case 1: return LaunchSiluMul<1>(x, k, w, half, out, stream);
    case 2: return LaunchSiluMul<2>(x, k, w, half, out, stream);
    case 3: return LaunchSiluMul<3>(x, k, w, half, out, stream);
    case 4: return LaunchSiluMul<4>(x, k, w, half, out, stream);
    case 5: return LaunchSiluMul<5>(x, k, w, half, out, stream);
    case 6: return LaunchSiluMul<6>(x, k, w, half, out, stream);
    case 7: return LaunchSiluMul<7>(x, k, w, half, out, stream);
    default: return LaunchSiluMul<8>(x, k, w, half, out, stream);
  }
}

}  // namespace nsa::cuda
