// Dense projections on the GPU through cuBLASLt: Y[m][n] = X[m][k] . W[n][k]^T in row-major
// terms (X and W bf16, fp32 accumulation, Y fp32), optionally added onto Y (the residual
// stream). W is stored the way checkpoints store nn.Linear weights ([out][in]).
//
// cuBLASLt is column-major, so the call computes Y^T (n x m) = op_T(W as k x n) . X^T (k x m).
// Algorithms come from cuBLASLt's heuristic once per shape and are cached; the workspace is
// fixed at creation, so calls can be captured in CUDA graphs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <tuple>

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"

namespace nsa::cuda {

class Gemm {
 public:
  Gemm() = default;
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  absl::Status Init(size_t workspace_bytes = size_t{32} << 20);
  // Y = X W^T (accumulate: Y += X W^T). ldy: Y's row stride in elements (n when 0).
  absl::Status Run(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w, int n, float* y, bool accumulate,
                   cudaStream_t stream, int ldy = 0);
  // Products of up to `rows` rows (at most kSmallGemmMaxRows) go to the small-m kernel
  // (kernels/cuda/small_gemm.h); 0 sends everything to cuBLASLt.
  void set_small_m_rows(int rows) { small_m_rows_ = rows; }
  // SwiGLU after the fused gate|up projection: out[m][half] = bf16(silu(g) u) for [g | u] = X
  // W^T, W [2 half][k]. In one kernel where the small-m GEMM takes the product
  // (LaunchSmallGemmSiluMul), else the product into scratch ([m][2 half] fp32) and LaunchSiluMul:
  // the same values either way.
  absl::Status RunSiluMul(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w, int half, float* scratch,
                          __nv_bfloat16* out, cudaStream_t stream);

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  absl::Status MakePlan(int m, int k, int n, int ldy, Plan* plan);
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  int small_m_rows_ = 1;
  std::map<std::tuple<int, int, int, int>, Plan> plans_;
};

}  // namespace nsa::cuda
