// CUDA_OK(call): a gtest assertion that a CUDA runtime call succeeded, naming the call and the
// error. The call is evaluated once.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#define CUDA_OK(expr)                                                                         \
  do {                                                                                        \
    const cudaError_t cuda_ok_err = (expr);                                                   \
    ASSERT_EQ(cuda_ok_err, cudaSuccess) << #expr << ": " << cudaGetErrorString(cuda_ok_err); \
  } while (0)
