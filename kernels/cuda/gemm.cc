#include "kernels/cuda/gemm.h"
#include "kernels/cuda/model_ops.h"
#include "kernels/cuda/small_gemm.h"

#include "absl/strings/str_cat.h"

namespace nsa::cuda {
namespace {

absl::Status LtError(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("cuBLASLt ", what, ": ", cublasLtGetStatusString(s)));
}

}  // namespace

#define NSA_LT(call, what) \
  if (absl::Status st_ = LtError((call), what); !st_.ok()) return st_

Gemm::~Gemm() {
  for (auto& [key, p] : plans_) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.desc);
  }
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(handle_);
}

absl::Status Gemm::Init(size_t workspace_bytes) {
  NSA_LT(cublasLtCreate(&handle_), "create");
  if (cudaError_t e = cudaMalloc(&workspace_, workspace_bytes); e != cudaSuccess) {
    return absl::ResourceExhaustedError(absl::StrCat("GEMM workspace: ", cudaGetErrorString(e)));
  }
  workspace_bytes_ = workspace_bytes;
  return absl::OkStatus();
}

absl::Status Gemm::MakePlan(int m, int k, int n, int ldy, Plan* p) {
  NSA_LT(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc");
  const cublasOperation_t t = CUBLAS_OP_T, nop = CUBLAS_OP_N;
  NSA_LT(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t)), "transa");
  NSA_LT(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &nop, sizeof(nop)), "transb");
  NSA_LT(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, k, n, k), "layout W");
  NSA_LT(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, k, m, k), "layout X");
  NSA_LT(cublasLtMatrixLayoutCreate(&p->c, CUDA_R_32F, n, m, ldy), "layout Y");
  cublasLtMatmulPreference_t pref;
  NSA_LT(cublasLtMatmulPreferenceCreate(&pref), "preference");
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_, sizeof(workspace_bytes_));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(handle_, p->desc, p->a, p->b, p->c, p->c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  NSA_LT(s, "heuristic");
  if (found == 0) return absl::InternalError(absl::StrCat("cuBLASLt has no algorithm for ", m, "x", k, " . ", n, "x", k));
  p->algo = result.algo;
  return absl::OkStatus();
}

absl::Status Gemm::Run(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w, int n, float* y, bool accumulate,
                       cudaStream_t stream, int ldy) {
  if (m == 0) return absl::OkStatus();
  if (ldy == 0) ldy = n;
  if (m <= small_m_rows_ && SmallGemmApplies(x, m, k, w)) {
    const cudaError_t e = LaunchSmallGemm(x, m, k, w, n, y, ldy, accumulate, stream);
    if (e != cudaSuccess) return absl::InternalError(absl::StrCat("small-m gemm: ", cudaGetErrorString(e)));
    return absl::OkStatus();
  }
  const auto key = std::make_tuple(m, k, n, ldy);
  auto it = plans_.find(key);
  if (it == plans_.end()) {
    Plan p;
    if (absl::Status s = MakePlan(m, k, n, ldy, &p); !s.ok()) return s;
    it = plans_.emplace(key, p).first;
  }
  const Plan& p = it->second;
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  NSA_LT(cublasLtMatmul(handle_, p.desc, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c, &p.algo, workspace_, workspace_bytes_,
                        stream),
         "matmul");
  return absl::OkStatus();
}

absl::Status Gemm::RunSiluMul(const __nv_bfloat16* x, int m, int k, const __nv_bfloat16* w, int half, float* scratch,
                              __nv_bfloat16* out, cudaStream_t stream) {
  if (m == 0) return absl::OkStatus();
  cudaError_t e;
  if (m <= small_m_rows_ && SmallGemmApplies(x, m, k, w)) {
    e = LaunchSmallGemmSiluMul(x, m, k, w, half, out, stream);
  } else {
    if (absl::Status s = Run(x, m, k, w, 2 * half, scratch, false, stream); !s.ok()) return s;
    e = LaunchSiluMul(scratch, m, half, out, stream);
  }
  if (e != cudaSuccess) return absl::InternalError(absl::StrCat("gate/up projection and SwiGLU: ", cudaGetErrorString(e)));
  return absl::OkStatus();
}

}  // namespace nsa::cuda
