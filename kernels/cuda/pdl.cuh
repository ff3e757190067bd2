// Programmatic dependent launch (PDL, sm_90): a kernel launched with LaunchChained may be
// scheduled while the kernel before it in the stream is still running, and waits for it inside
// (ChainedWait) instead of the stream holding its launch back until the previous grid has
// drained. In a decode step's CUDA graph of a dozen small kernels a layer, that hides most of
// each launch's latency behind the previous kernel's last wave.
//
// The rules the kernels here keep:
//  - a kernel launched with LaunchChained calls ChainedWait before its first global read or
//    write (its predecessor's outputs, or buffers the predecessor still reads), so the order of
//    every memory access is the plain stream order;
//  - ChainedWait also lets this kernel's own successor be scheduled (griddepcontrol.
//    launch_dependents): that successor waits in turn, so nothing can run ahead of its data;
//  - the one exception: model weights (RMSNorm's, in model_ops.cu's RmsNormVecKernel) may be
//    read before ChainedWait: no kernel of a step writes them, and every kernel waits before
//    it lets its successor be scheduled, so only the kernel just before can still run; weights
//    are written once, at load, before any step (the random ones by ordinary launches);
//  - both instructions do nothing for a kernel launched the ordinary way (no programmatic
//    dependency), and LaunchChained launches the ordinary way where the process asks so
//    (NSA_PDL=0) or the device predates sm_90.
#pragma once

#include <cstdlib>
#include <cstring>
#include <utility>

#include <cuda_runtime.h>

namespace nsa::cuda {

__device__ __forceinline__ void ChainedWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Whether LaunchChained asks for programmatic serialization: on sm_90 and later unless
// NSA_PDL=0 (read once per process).
inline bool ChainedLaunchesOn() {
  static const bool on = [] {
    if (const char* v = std::getenv("NSA_PDL"); v && std::strcmp(v, "0") == 0) return false;
    int device = 0, major = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return major >= 9;
  }();
  return on;
}

// kernel<<<grid, block, smem, stream>>>(args...), allowed to start before the previous kernel
// in the stream ends (see above; the kernel must call ChainedWait first).
template <typename... Params, typename... Args>
cudaError_t LaunchChained(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                          Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid, config.blockDim = block, config.dynamicSmemBytes = smem, config.stream = stream;
  config.attrs = attr, config.numAttrs = ChainedLaunchesOn() ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace nsa::cuda
