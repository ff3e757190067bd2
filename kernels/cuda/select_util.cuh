// Block-selection helpers shared by the decode and prefill kernels (kernels/cuda/nsa_decode.cu,
// kernels/cuda/nsa_prefill.cu): the forced blocks and the reference's order of candidates.
#pragma once

#include <cstdint>

#include "kernels/nsa_params.h"

namespace nsa::cuda::select {

// Blocks a (position, KV head) must take: [0, init) and [c - local + 1, c], of c + 1.
__device__ __forceinline__ bool Forced(const NsaParams& p, int64_t j, int64_t c) {
  return j < p.init_blocks || j > c - p.local_blocks;
}
__device__ __forceinline__ int NumForced(const NsaParams& p, int64_t c) {
  int f = 0;
  for (int64_t j = 0; j <= c; ++j) {
    if (j >= p.init_blocks && j <= c - p.local_blocks) j = c - p.local_blocks;  // skip the free middle
    else ++f;
  }
  return f;
}

// The better of two candidates: the higher score, then the lower index (the reference's order).
__device__ __forceinline__ bool Better(float v, int j, float ov, int oj) { return ov > v || (ov == v && oj < j); }

// The best of a warp's candidates (v, j), at every lane.
__device__ __forceinline__ void WarpBest(float& v, int& j) {
  for (int o = 16; o > 0; o /= 2) {
    const float ov = __shfl_xor_sync(0xffffffff, v, o);
    const int oj = __shfl_xor_sync(0xffffffff, j, o);
    if (Better(v, j, ov, oj)) v = ov, j = oj;
  }
}

}  // namespace nsa::cuda::select
