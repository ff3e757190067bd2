// NSA_HOST_DEVICE marks small inline functions that host code and CUDA kernels share.
#pragma once

#if defined(__CUDACC__)
#define NSA_HOST_DEVICE __host__ __device__
#else
#define NSA_HOST_DEVICE
#endif
