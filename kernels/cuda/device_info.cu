#include "kernels/cuda/device_info.h"

#include <cstdio>

#include <cuda_runtime.h>

namespace nsa::cuda {

int DeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error so later calls start clean
    return 0;
  }
  return count;
}

std::string DeviceDescription(int index) {
  cudaDeviceProp prop;
  cudaError_t err = cudaGetDeviceProperties(&prop, index);
  if (err != cudaSuccess) return std::string("unavailable: ") + cudaGetErrorString(err);
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%s, sm_%d%d, %d SMs, %.1f GiB", prop.name, prop.major, prop.minor,
                prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0);
  return buf;
}

}  // namespace nsa::cuda
