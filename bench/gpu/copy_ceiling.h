// The copy ceiling of gpu.md, measured in the same run as a benchmark: a device-to-device copy
// of 2 GiB, bytes read + written per second, median of 10 after 2 warm-ups.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace nsa::bench {

inline double CopyCeiling() {
  const size_t bytes = size_t{1} << 31;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
    std::fprintf(stderr, "copy ceiling: cannot allocate 2 x 2 GiB\n");
    std::exit(1);
  }
  cudaEvent_t s, e;
  cudaEventCreate(&s);
  cudaEventCreate(&e);
  std::vector<float> ms;
  for (int i = 0; i < 12; ++i) {
    cudaEventRecord(s);
    cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e);
    cudaEventSynchronize(e);
    float t = 0;
    cudaEventElapsedTime(&t, s, e);
    if (i >= 2) ms.push_back(t);
  }
  cudaFree(a);
  cudaFree(b);
  cudaEventDestroy(s);
  cudaEventDestroy(e);
  std::sort(ms.begin(), ms.end());
  return 2.0 * bytes / (ms[ms.size() / 2] * 1e-3);
}

}  // namespace nsa::bench
