// Does a cold instruction cache cost the fused decode kernel its hand-offs? (eleventh session)
// The same dynamic work -- K fused multiply-adds in four independent chains a thread -- as straight
// -line code (K instructions, 16 bytes each, fully unrolled) and as a small loop, launched on one
// block of W warps per SM. If fetching fresh code from L2 costs more than the arithmetic, the
// straight-line kernel takes longer than the loop, and more so the longer its code.
//   icache_probe     (prints a markdown table: microseconds a launch, medians of 200)
#include <cuda_runtime.h>

#include <cstdio>

#include "bench/gpu/copy_ceiling.h"

// passes > 1: the same straight-line code again in the same launch (is it still cached?).
template <int K>
__global__ void Unrolled(float* out, float a, float b, int passes = 1) {
  float x0 = threadIdx.x, x1 = x0 + 1.f, x2 = x0 + 2.f, x3 = x0 + 3.f;
#pragma unroll 1
  for (int p = 0; p < passes; ++p) {
#pragma unroll
    for (int i = 0; i < K / 4; ++i) {
      x0 = fmaf(x0, a, b), x1 = fmaf(x1, a, b), x2 = fmaf(x2, a, b), x3 = fmaf(x3, a, b);
    }
  }
  if (x0 + x1 + x2 + x3 == 12345.f) out[threadIdx.x] = x0;  // keeps the chains alive
}

__global__ void Looped(float* out, float a, float b, int k) {
  float x0 = threadIdx.x, x1 = x0 + 1.f, x2 = x0 + 2.f, x3 = x0 + 3.f;
#pragma unroll 8
  for (int i = 0; i < k / 4; ++i) {
    x0 = fmaf(x0, a, b), x1 = fmaf(x1, a, b), x2 = fmaf(x2, a, b), x3 = fmaf(x3, a, b);
  }
  if (x0 + x1 + x2 + x3 == 12345.f) out[threadIdx.x] = x0;
}

// Median microseconds a launch (200 timed after 10 warm-ups: bench/gpu/copy_ceiling.h).
template <typename Launch>
float MedianUs(Launch launch, cudaStream_t s) {
  return 1e3f * nsa::bench::MedianEventMs(s, 10, 200, launch);
}

template <int K>
void Row(float* out, cudaStream_t s, int sms, int warps, float* flush) {
  const float u = MedianUs([&] { Unrolled<K><<<sms, 32 * warps, 0, s>>>(out, 0.999f, 0.001f); }, s);
  const float l = MedianUs([&] { Looped<<<sms, 32 * warps, 0, s>>>(out, 0.999f, 0.001f, K); }, s);
  // The unrolled kernel again, each launch after another kernel of other code (the loop's)
  // has run on every SM: what a kernel pays when its code is not already in the SMs' caches.
  const float uc = MedianUs([&] {
    Looped<<<sms, 32, 0, s>>>(flush, 0.5f, 0.5f, 8);
    Unrolled<K><<<sms, 32 * warps, 0, s>>>(out, 0.999f, 0.001f);
  }, s);
  const float lc = MedianUs([&] {
    Looped<<<sms, 32, 0, s>>>(flush, 0.5f, 0.5f, 8);
    Looped<<<sms, 32 * warps, 0, s>>>(out, 0.999f, 0.001f, K);
  }, s);
  // The second pass over the same code in the same launch, against the loop's second K.
  const float u2 = MedianUs([&] { Unrolled<K><<<sms, 32 * warps, 0, s>>>(out, 0.999f, 0.001f, 2); }, s);
  const float l2 = MedianUs([&] { Looped<<<sms, 32 * warps, 0, s>>>(out, 0.999f, 0.001f, 2 * K); }, s);
  std::printf("| %d | %d | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", K, K * 16 / 1024, warps, u, l, uc, lc,
              u2 - u, l2 - l);
  CHECK(cudaGetLastError());
}

int main() {
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  float *out, *flush;
  CHECK(cudaMalloc(&out, 4096 * sizeof(float)));
  CHECK(cudaMalloc(&flush, 4096 * sizeof(float)));
  cudaStream_t s;
  CHECK(cudaStreamCreate(&s));
  std::printf("| FMAs a thread | straight-line code (KB) | warps a block | unrolled (us) | loop (us) | unrolled after another kernel (us) | loop after another kernel (us) | unrolled: second pass (us) | loop: second K (us) |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (int warps : {1, 4}) {
    Row<1024>(out, s, sms, warps, flush);
    Row<4096>(out, s, sms, warps, flush);
    Row<8192>(out, s, sms, warps, flush);
    Row<16384>(out, s, sms, warps, flush);
  }
  return 0;
}
