// The copy ceiling of gpu.md, measured in the same run as a benchmark: a device-to-device copy
// of 2 GiB, bytes read + written per second, median of 10 after 2 warm-ups. Also the timing
// helper and the error check the GPU benchmarks share.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

// CHECK(call): a CUDA runtime call that must succeed; otherwise the benchmark exits, naming it.
#define CHECK(expr)                                                                              \
  do {                                                                                           \
    cudaError_t e = (expr);                                                                      \
    if (e != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e)); \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)

namespace nsa::bench {

// Median GPU time in milliseconds of `timed` runs of run() on `stream` after `warmup` more,
// each between two CUDA events.
template <typename Run>
float MedianEventMs(cudaStream_t stream, int warmup, int timed, Run run) {
  cudaEvent_t s, e;
  cudaEventCreate(&s);
  cudaEventCreate(&e);
  std::vector<float> ms;
  for (int i = 0; i < warmup + timed; ++i) {
    cudaEventRecord(s, stream);
    run();
    cudaEventRecord(e, stream);
    cudaEventSynchronize(e);
    float t = 0;
    cudaEventElapsedTime(&t, s, e);
    if (i >= warmup) ms.push_back(t);
  }
  cudaEventDestroy(s);
  cudaEventDestroy(e);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

inline double CopyCeiling() {
  const size_t bytes = size_t{1} << 31;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
    std::fprintf(stderr, "copy ceiling: cannot allocate 2 x 2 GiB\n");
    std::exit(1);
  }
  const float ms = MedianEventMs(nullptr, 2, 10, [&] { cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice); });
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes / (ms * 1e-3);
}

}  // namespace nsa::bench
