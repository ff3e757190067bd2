// Y[m][n] = X[m][k] . W[n][k]^T (bf16 in, fp32 out, optionally added onto Y) for m <= 8 rows:
// the decode steps of small batches, where the product is a stream of W and cuBLASLt's choices
// reached about half of the copy bandwidth. Gemm::Run calls it when it applies.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace nsa::cuda {

constexpr int kSmallGemmMaxRows = 8;

// m in [1, 8], k a multiple of 8, X and W 16-byte aligned.
bool SmallGemmApplies(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w);
// ldy: Y's row stride in elements (>= n). split: warps that share an output column, each a
// share of k (1, 2 or 4: more loads in flight for few columns; the shares are added in warp
// order); 0 takes NSA_SMALL_GEMM_SPLIT (1, 2 or 4), else 2. Another split is another float.
cudaError_t LaunchSmallGemm(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w, int n, float* y, int ldy,
                            bool accumulate, cudaStream_t stream, int split = 0);
// SwiGLU after the gate|up projection, fused: W is [2 half][k] (gate rows, then up rows) and
// out[i][j] = bf16(silu(X[i] . W[j]) * (X[i] . W[half + j])), [m][half]: the same values as
// LaunchSmallGemm into [m][2 half] then LaunchSiluMul (kernels/cuda/model_ops.h), one kernel.
cudaError_t LaunchSmallGemmSiluMul(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w, int half,
                                   __nv_bfloat16* out, cudaStream_t stream, int split = 0);

}  // namespace nsa::cuda
