// Dense projections on the GPU through cuBLASLt: Y[m][n] = X[m][k] . W[n][k]^T in row-major
// terms (X and W bf16, fp32 accumulation, Y fp32), optionally added onto Y (the residual
// stream). W is stored the way checkpoints store nn.Linear weights ([out][in]).
//
// cuBLASLt is column-major, so the call computes Y^T (n x m) = op_T(W as k x n) . X^T (k x m).
// Algorithms come from cuBLASLt's heuristic once per shape and are cached; the workspace is
// fixed at creation, so calls can be captured in CUDA graphs. For products of few rows (decode
// steps of a batch) the heuristic's first choice is not always the fastest: up to kTuneCandidates
// of its choices are timed on the first call of a shape (outside a stream capture) and the
// fastest is kept (set_tune_rows, NSA_GEMM_TUNE_ROWS).
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
  // Products of up to `rows` rows time the heuristic's candidates on their first call and keep
  // the fastest (0: the heuristic's first choice always). The default: NSA_GEMM_TUNE_ROWS, else
  // kDefaultTuneRows. Timing picks by speed, so two processes may keep different algorithms
  // (results equal up to rounding).
  void set_tune_rows(int rows) { tune_rows_ = rows; }
  static constexpr int kDefaultTuneRows = 64, kTuneCandidates = 8;
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
  absl::Status MakePlan(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w, int n, int ldy, cudaStream_t stream,
                        Plan* plan);
  // Index of the fastest of `count` candidate algorithms for the plan's product (each run into a
  // scratch Y), or -1 when they cannot be timed here.
  int Fastest(const Plan& p, const cublasLtMatmulHeuristicResult_t* candidates, int count, const __nv_bfloat16* x,
              int m, const __nv_bfloat16* w, int ldy, cudaStream_t stream);
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  int small_m_rows_ = 1;
  int tune_rows_ = -1;  // -1: NSA_GEMM_TUNE_ROWS or kDefaultTuneRows, read at Init
  std::map<std::tuple<int, int, int, int>, Plan> plans_;
};

}  // namespace nsa::cuda
