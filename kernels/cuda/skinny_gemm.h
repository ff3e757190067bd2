// Y[m][n] = X[m][k] . W[n][k]^T (bf16 in, fp32 accumulate and out, optionally added onto Y) for
// 9-64 rows: the decode steps of a batch, between the small-m kernel's up to 8 rows
// (kernels/cuda/small_gemm.h) and the prefill chunks cuBLASLt takes. The product is a stream of W
// (tens of MB) against a few KB of X; cuBLASLt's heuristic choice ran it at about 40% of the copy
// ceiling (1.3b, 32 x 64k, eager profile). Gemm::Run calls it where it applies.
//
// A block takes 16 columns of Y and walks k in chunks of 128 through a ring of shared-memory
// stages filled by 16-byte asynchronous copies (W's chunks before the programmatic-launch wait:
// weights are never written by a step); each of its four warps multiplies its quarter of a chunk
// on tensor cores (mma.sync m16n8k16, X's rows padded to 16), and the warps' sums are added in
// warp order at the end: no atomics, the same floats on every run.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace nsa::cuda {

constexpr int kSkinnyGemmMaxRows = 64;

// m in [1, 64], k a multiple of 128, X and W 16-byte aligned.
bool SkinnyGemmApplies(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w);
// ldy: Y's row stride in elements (>= n).
cudaError_t LaunchSkinnyGemm(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w, int n, float* y, int ldy,
                             bool accumulate, cudaStream_t stream);

}  // namespace nsa::cuda
