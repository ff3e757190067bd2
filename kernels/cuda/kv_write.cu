#include "kernels/cuda/kv_write.h"

#include "kernels/cuda/pdl.cuh"

namespace nsa::cuda {
namespace {

// Copies one row of `dim` bf16 with 16-byte vectors.
__device__ void CopyRow(__nv_bfloat16* dst, const __nv_bfloat16* src, int dim) {
  for (int v = threadIdx.x; v < dim / 8; v += blockDim.x) {
    reinterpret_cast<uint4*>(dst)[v] = reinterpret_cast<const uint4*>(src)[v];
  }
}

// grid (num_tokens, kv_heads).
__global__ void KvWriteKernel(KvWriteArgs a) {
  ChainedWait();
  const int i = blockIdx.x, g = blockIdx.y;
  const KvLayout& L = a.layout;
  if (a.token_seq[i] < 0) return;  // padding of a fixed-size (graph-captured) step
  const int hd = L.head_dim, vhd = L.v_head_dim, kvh = L.num_kv_heads;
  const int64_t row = static_cast<int64_t>(i) * kvh + g;
  CopyRow(KvRowInPages(a, i, a.raw_tables, KvPlane::kSel, g, false), a.k + row * hd, hd);
  CopyRow(KvRowInPages(a, i, a.raw_tables, KvPlane::kSel, g, true), a.v + row * vhd, vhd);
  if (L.has_win) {
    CopyRow(KvRowInPages(a, i, a.win_tables, KvPlane::kWin, g, false), a.k_win + row * hd, hd);
    CopyRow(KvRowInPages(a, i, a.win_tables, KvPlane::kWin, g, true), a.v_win + row * vhd, vhd);
  }
  if (L.has_src_k) CopyRow(KvRowInPages(a, i, a.src_tables, KvPlane::kSrc, g, false), a.k_src + row * hd, hd);
  if (L.has_src_v) CopyRow(KvRowInPages(a, i, a.src_tables, KvPlane::kSrc, g, true), a.v_src + row * vhd, vhd);
}

// grid (num_summaries, kv_heads), 256 threads. Inputs are read in float, the sums kept in float.
__global__ void SummaryKernel(SummaryArgs a) {
  ChainedWait();
  const int s = blockIdx.x, g = blockIdx.y;
  const KvLayout& L = a.layout;
  const NsaParams& p = a.nsa;
  const int64_t seq = a.summary_seq[s], i = a.summary_index[s];
  if (seq < 0) return;  // padding of a fixed-size (graph-captured) step
  const int hd = L.head_dim, vhd = L.v_head_dim, l = p.compress_block;
  const int64_t first = i * p.compress_stride;
  const int64_t end_token = first + l - 1;
  const bool linear = p.compress_fn == CompressFn::kLinear;
  // Where the inputs are: the source plane when the layout has one, else the selection plane.
  auto input = [&](int64_t t, bool value) {
    const bool own = value ? L.has_src_v : L.has_src_k;
    const int32_t* tables = own ? a.src_tables : a.raw_tables;
    const int64_t page = tables[seq * a.max_pages + t / L.page_tokens];
    const int dim = value ? vhd : hd;
    return a.pages + page * L.page_elems + L.Offset(own ? KvPlane::kSrc : KvPlane::kSel, a.layer, g, value) +
           (t % L.page_tokens) * dim;
  };
  const int64_t out_page = a.raw_tables[seq * a.max_pages + end_token / L.page_tokens];
  const int64_t out_slot = (end_token % L.page_tokens) / p.compress_stride;
  extern __shared__ float x[];  // linear: [l][max(hd, vhd)] inputs (+ pe for keys); then [hd] outputs
  for (int value = 0; value < 2; ++value) {
    const int dim = value ? vhd : hd;
    __nv_bfloat16* out = a.pages + out_page * L.page_elems + L.Offset(KvPlane::kCmp, a.layer, g, value) + out_slot * dim;
    if (!linear) {
      // Row addresses first (one page-table read each, all in parallel), then the sums: the
      // loads of the inner loop are independent, so they overlap instead of queueing behind a
      // table read each (70 us a block at l = 64 before).
      __shared__ const __nv_bfloat16* rows[256];
      for (int j = threadIdx.x; j < l; j += blockDim.x) rows[j] = input(first + j, value);
      __syncthreads();
      for (int c = threadIdx.x; c < dim; c += blockDim.x) {
        float acc = 0.f;
#pragma unroll 8
        for (int j = 0; j < l; ++j) acc += __bfloat162float(rows[j][c]);
        out[c] = __float2bfloat16(acc / l);
      }
      __syncthreads();
      continue;
    }
    const float* pe = value ? nullptr : a.intra_block_pe + static_cast<int64_t>(g) * l * hd;
    for (int idx = threadIdx.x; idx < l * dim; idx += blockDim.x) {
      const int j = idx / dim, e = idx % dim;
      x[idx] = __bfloat162float(input(first + j, value)[e]) + (pe ? pe[j * dim + e] : 0.f);
    }
    __syncthreads();
    const __nv_bfloat16* w = (value ? a.compress_value : a.compress_key) + static_cast<int64_t>(g) * l * dim * dim;
    float* y = x + l * dim;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
      float acc = 0.f;
      for (int r = 0; r < l * dim; ++r) acc += x[r] * __bfloat162float(w[static_cast<int64_t>(r) * dim + c]);
      y[c] = acc;
    }
    __syncthreads();
    if (value) {
      for (int c = threadIdx.x; c < dim; c += blockDim.x) out[c] = __float2bfloat16(y[c]);
    } else {
      // The compressed key is rotated at its block's first position (rotate-half RoPE).
      const int half = dim / 2;
      for (int c = threadIdx.x; c < half; c += blockDim.x) {
        const double angle = static_cast<double>(first) * pow(a.rope_theta, -2.0 * c / dim);
        const float cs = static_cast<float>(cos(angle)), sn = static_cast<float>(sin(angle));
        out[c] = __float2bfloat16(y[c] * cs - y[c + half] * sn);
        out[c + half] = __float2bfloat16(y[c + half] * cs + y[c] * sn);
      }
    }
    __syncthreads();
  }
}

}  // namespace

cudaError_t LaunchKvWrite(const KvWriteArgs& a, cudaStream_t stream) {
  if (a.num_tokens == 0) return cudaSuccess;
  if (a.layout.head_dim % 8 != 0 || a.layout.v_head_dim % 8 != 0) return cudaErrorInvalidValue;  // 16-byte copies
  if (a.layout.has_win && (!a.win_tables || !a.k_win || !a.v_win)) return cudaErrorInvalidValue;
  if ((a.layout.has_src_k && (!a.src_tables || !a.k_src)) || (a.layout.has_src_v && !a.v_src)) return cudaErrorInvalidValue;
  return LaunchChained(KvWriteKernel, dim3(a.num_tokens, a.layout.num_kv_heads), 32, 0, stream, a);
}

cudaError_t LaunchSummaries(const SummaryArgs& a, cudaStream_t stream) {
  if (a.num_summaries == 0) return cudaSuccess;
  if (a.nsa.compress_block > 256) return cudaErrorInvalidValue;  // the row table of the mean
  const bool linear = a.nsa.compress_fn == CompressFn::kLinear;
  if (linear && (!a.intra_block_pe || !a.compress_key || !a.compress_value)) return cudaErrorInvalidValue;
  const int dim = a.layout.head_dim > a.layout.v_head_dim ? a.layout.head_dim : a.layout.v_head_dim;
  const size_t smem = linear ? (static_cast<size_t>(a.nsa.compress_block) * dim + dim) * sizeof(float) : 0;
  static const cudaError_t opt_in = [] {
    int max_smem = 0;
    cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0);
    max_smem -= 8 << 10;  // room for the kernel's static shared memory (the mean's row table)
    return cudaFuncSetAttribute(SummaryKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem);
  }();
  if (opt_in != cudaSuccess) return opt_in;
  return LaunchChained(SummaryKernel, dim3(a.num_summaries, a.layout.num_kv_heads), 256, smem, stream, a);
}

}  // namespace nsa::cuda
