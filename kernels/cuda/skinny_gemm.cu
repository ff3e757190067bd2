#include "kernels/cuda/skinny_gemm.h"

#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/tile_mma.cuh"

namespace nsa::cuda {
namespace {

using tile::CpAsync16;
using tile::LdMatrixX4;
using tile::Mma;
using tile::SmemAddr;

constexpr int kThreads = 128;  // four warps, each a quarter of every chunk's k
constexpr int kCols = 16;  // columns of Y a block (two 8-column MMA tiles)
constexpr int kChunk = 128;  // k a stage
constexpr int kStages = 8;  // the ring: seven chunks in flight while one is multiplied
constexpr int kStride = kChunk + 8;  // a stage's row in bf16, padded (ldmatrix without bank conflicts)
constexpr int kVectors = kChunk / 8;  // 16-byte copies a row of a chunk

// A stage: W's kCols rows of the chunk, then X's 16 MT rows (rows past m stay zero).
template <int MT>
constexpr int StageElems() {
  return (kCols + 16 * MT) * kStride;
}
template <int MT>
constexpr size_t SmemBytes() {
  return static_cast<size_t>(kStages) * StageElems<MT>() * sizeof(__nv_bfloat16);
}

// MT: 16-row tiles of X (m <= 16 MT). Block b computes columns [16 b, 16 b + 16) of Y.
template <int MT>
__global__ void __launch_bounds__(kThreads) SkinnyGemmKernel(const __nv_bfloat16* x, int m, int k,
                                                             const __nv_bfloat16* w, int n, float* y, int ldy,
                                                             bool accumulate) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* smem = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  const int n0 = blockIdx.x * kCols, chunks = k / kChunk;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, r8 = lane % 8, mi = lane / 8;
  const int v = tid % kVectors, r0 = tid / kVectors, dr = kThreads / kVectors;
  auto stage = [&](int c) { return smem + (c % kStages) * StageElems<MT>(); };
  // Thread x copies 16-byte vector x % 16 of rows x / 16 + 8 j of the chunk.
  auto copy_w = [&](int c) {
    __nv_bfloat16* s = stage(c);
    for (int r = r0; r < kCols; r += dr) {
      const int row = min(n0 + r, n - 1);  // columns past n: a valid row, never written out
      CpAsync16(SmemAddr(s + r * kStride + 8 * v), w + static_cast<int64_t>(row) * k + c * kChunk + 8 * v);
    }
  };
  auto copy_x = [&](int c) {
    __nv_bfloat16* s = stage(c) + kCols * kStride;
    for (int r = r0; r < m; r += dr) {
      CpAsync16(SmemAddr(s + r * kStride + 8 * v), x + static_cast<int64_t>(r) * k + c * kChunk + 8 * v);
    }
  };
  // X's rows past m, zero in every stage (no copy writes them).
  {
    constexpr int kRowVecs = kStride / 8;
    const int pad_rows = 16 * MT - m;
    for (int i = tid; i < kStages * pad_rows * kRowVecs; i += kThreads) {
      const int s = i / (pad_rows * kRowVecs), rest = i - s * pad_rows * kRowVecs;
      const int r = m + rest / kRowVecs, vec = rest % kRowVecs;
      reinterpret_cast<uint4*>(smem + s * StageElems<MT>() + (kCols + r) * kStride)[vec] = make_uint4(0, 0, 0, 0);
    }
  }
  // The first chunks' weights before the wait for the previous kernel (nothing in a step writes
  // them), X's after it. Every slot of the ring commits one group, so the wait below is the same
  // for every chunk: all but the kStages - 2 latest groups done.
  for (int c = 0; c < kStages - 1; ++c) {
    if (c < chunks) copy_w(c);
    __pipeline_commit();
  }
  ChainedWait();
  for (int c = 0; c < kStages - 1; ++c) {
    if (c < chunks) copy_x(c);
    __pipeline_commit();
  }
  float acc[MT][2][4] = {};
  for (int c = 0; c < chunks; ++c) {
    __pipeline_wait_prior(kStages - 2);
    __syncthreads();  // chunk c landed for every thread; chunk c - 1's stage is free
    if (c + kStages - 1 < chunks) copy_w(c + kStages - 1), copy_x(c + kStages - 1);
    __pipeline_commit();
    const __nv_bfloat16* ws = stage(c);
    const __nv_bfloat16* xs = ws + kCols * kStride;
#pragma unroll
    for (int step = 0; step < kChunk / 64; ++step) {
      const int kk = (kChunk / 4) * warp + 16 * step;
      // W's b0, b1 of column tiles 0 and 1 (rows 0-7 | 8-15) x (k kk | kk + 8), as tile::QkTile's K.
      uint32_t b[4];
      LdMatrixX4(b, ws + (8 * (mi >> 1) + r8) * kStride + kk + 8 * (mi & 1));
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        uint32_t a[4];
        LdMatrixX4(a, xs + (16 * mt + r8 + 8 * (mi & 1)) * kStride + kk + 8 * (mi >> 1));
        Mma(acc[mt][0], a[0], a[1], a[2], a[3], b[0], b[1]);
        Mma(acc[mt][1], a[0], a[1], a[2], a[3], b[2], b[3]);
      }
    }
  }
  // The warps' sums through shared memory, added in warp order.
  __pipeline_wait_prior(0);
  __syncthreads();
  float* red = reinterpret_cast<float*>(smem_raw);  // [warp][16 MT][kCols]
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = 16 * mt + g + (e >= 2 ? 8 : 0), col = 8 * j + 2 * t + (e & 1);
        red[(warp * 16 * MT + row) * kCols + col] = acc[mt][j][e];
      }
    }
  }
  __syncthreads();
  for (int i = tid; i < m * kCols; i += kThreads) {
    const int row = i / kCols, col = i % kCols;
    if (n0 + col >= n) continue;
    float sum = red[row * kCols + col];
#pragma unroll
    for (int w4 = 1; w4 < kThreads / 32; ++w4) sum += red[(w4 * 16 * MT + row) * kCols + col];
    float* out = y + static_cast<int64_t>(row) * ldy + n0 + col;
    *out = accumulate ? *out + sum : sum;
  }
}

template <int MT>
cudaError_t Launch(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w, int n, float* y, int ldy,
                   bool accumulate, cudaStream_t stream) {
  static const cudaError_t opt_in = cudaFuncSetAttribute(
      SkinnyGemmKernel<MT>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(SmemBytes<MT>()));
  if (opt_in != cudaSuccess) return opt_in;
  return LaunchChained(SkinnyGemmKernel<MT>, (n + kCols - 1) / kCols, kThreads, SmemBytes<MT>(), stream, x, m, k, w, n,
                       y, ldy, accumulate);
}

}  // namespace

bool SkinnyGemmApplies(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w) {
  return m >= 1 && m <= kSkinnyGemmMaxRows && k >= kChunk && k % kChunk == 0 &&
         reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
}

cudaError_t LaunchSkinnyGemm(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w, int n, float* y, int ldy,
                             bool accumulate, cudaStream_t stream) {
  if (!SkinnyGemmApplies(x, m, k, w) || n < 1 || ldy < n || !y) return cudaErrorInvalidValue;
  switch ((m + 15) / 16) {
    case 1: return Launch<1>(x, m, k, w, n, y, ldy, accumulate, stream);
    case 2: return Launch<2>(x, m, k, w, n, y, ldy, accumulate, stream);
    case 3: return Launch<3>(x, m, k, w, n, y, ldy, accumulate, stream);
    default: return Launch<4>(x, m, k, w, n, y, ldy, accumulate, stream);
  }
}

}  // namespace nsa::cuda
