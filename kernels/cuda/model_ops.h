// The transformer's elementwise and row-wise steps on the GPU (the matrix products are
// kernels/cuda/gemm.h). Activations between the projections are fp32 (the residual stream, the
// projection outputs); GEMM inputs are bf16. CPU twins: kernels/reference/ops.h and the model's
// own code in models/nsa_model.cc; tests/gpu/model_test.cc holds the whole model to them.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/kv_write.h"

namespace nsa::cuda {

// x[i] = table[tokens[i]] (one row of `dim`), in fp32.
cudaError_t LaunchEmbed(const int32_t* tokens, int n, const __nv_bfloat16* table, int dim, float* x, cudaStream_t stream);

// out[i] = bf16(x[r] / rms(x[r]) * weight), r = rows ? rows[i] : i.
cudaError_t LaunchRmsNorm(const float* x, const int32_t* rows, int n, int dim, const float* weight, float eps,
                          __nv_bfloat16* out, cudaStream_t stream);

// Splits the fused projection [n][width] (q | k | v | gates | per-branch k_win v_win k_cmp v_cmp)
// into the attention's inputs: biases added, RoPE (rotate-half, angles in double) at each token's
// position on q, k, k_win and (mean compression) k_cmp, sigmoid on the gates. Linear
// compression without per-branch K/V reads the keys before RoPE: k_src gets them.
struct QkvSplitArgs {
  int n = 0, width = 0;
  int num_heads = 0, num_kv_heads = 0, head_dim = 0, v_head_dim = 0;
  bool per_branch = false, linear = false;
  const double* inv_freq = nullptr;  // [head_dim / 2]: theta^(-2i / head_dim), computed on the host as the CPU does
  const float* proj = nullptr;
  const float *q_bias = nullptr, *k_bias = nullptr, *v_bias = nullptr;  // or null
  const int64_t* positions = nullptr;  // [n]
  __nv_bfloat16* q = nullptr;  // [n][num_heads][head_dim]
  float* gates = nullptr;  // [n][num_heads][3]
  __nv_bfloat16 *k = nullptr, *v = nullptr;  // [n][kv_heads][dim]
  __nv_bfloat16 *k_win = nullptr, *v_win = nullptr, *k_src = nullptr, *v_src = nullptr;  // when used
  // write_cache: the rows LaunchKvWrite would copy from the buffers above (k, v, and k_win,
  // v_win, k_src, v_src where the layout has them) also go straight into the pages, through
  // cache's layout, layer, token_seq, token_pos, tables and pages (its row pointers unused):
  // one launch less a layer.
  bool write_cache = false;
  KvWriteArgs cache;
};
cudaError_t LaunchQkvSplit(const QkvSplitArgs& args, cudaStream_t stream);

// out[i][j] = bf16(silu(gu[i][j]) * gu[i][M + j]) for the fused gate|up projection [n][2M].
cudaError_t LaunchSiluMul(const float* gu, int n, int M, __nv_bfloat16* out, cudaStream_t stream);

cudaError_t LaunchToBf16(const float* in, int64_t count, __nv_bfloat16* out, cudaStream_t stream);
cudaError_t LaunchToFloat(const __nv_bfloat16* in, int64_t count, float* out, cudaStream_t stream);

// Random weights on the device, element for element those of models/presets.h RandomWeight
// (counter-based), rounded to bf16: a preset's random model without writing a checkpoint.
cudaError_t LaunchRandomBf16(__nv_bfloat16* out, int64_t count, uint64_t seed, uint64_t name_hash, float mean, float std,
                             cudaStream_t stream);
// The same values as fp32 (rounded through bf16, as a bf16 checkpoint would hold them).
cudaError_t LaunchRandomFloat(float* out, int64_t count, uint64_t seed, uint64_t name_hash, float mean, float std,
                              cudaStream_t stream);

}  // namespace nsa::cuda
