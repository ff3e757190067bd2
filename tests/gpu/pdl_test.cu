// Chained launches (kernels/cuda/pdl.cuh): a kernel launched with LaunchChained may start before
// the previous kernel ends, and must still see all of its writes after ChainedWait. A chain of
// 200 dependent kernels, each of which sleeps before writing (so that a successor that did not
// wait would read its input before it is written), run eagerly and captured in a CUDA graph (as
// the runner's decode steps are): every element must come out incremented exactly 200 times.
// The whole model's graph-equals-eager check (model_gpu_test) covers the real kernels.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/cuda/pdl.cuh"
#include "tests/gpu/cuda_check.h"

namespace nsa {
namespace {

__global__ void IncrementAfterSleep(const int* in, int* out, int n) {
  cuda::ChainedWait();
  __nanosleep(2000);  // the writes come late: a successor that ran ahead would read stale values
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) out[i] = in[i] + 1;
}

constexpr int kElements = 1 << 16, kKernels = 200;

// Launches the chain a -> b -> a ... (kKernels kernels); the result lands in a (kKernels is even).
void LaunchChain(int* a, int* b, cudaStream_t stream) {
  for (int k = 0; k < kKernels; ++k) {
    const int* in = k % 2 == 0 ? a : b;
    int* out = k % 2 == 0 ? b : a;
    CUDA_OK(cuda::LaunchChained(IncrementAfterSleep, 132, 256, 0, stream, in, out, kElements));
  }
}

void Check(const int* d, int want) {
  std::vector<int> h(kElements);
  CUDA_OK(cudaMemcpy(h.data(), d, kElements * sizeof(int), cudaMemcpyDeviceToHost));
  int wrong = 0;
  for (int i = 0; i < kElements; ++i) wrong += h[i] != want + i;
  EXPECT_EQ(wrong, 0) << "elements not incremented exactly " << kKernels << " times";
}

TEST(ChainedLaunch, DependentKernelsSeeTheirPredecessorsWritesEagerAndInAGraph) {
  int device = 0, major = 0;
  CUDA_OK(cudaGetDevice(&device));
  CUDA_OK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  const char* pdl = std::getenv("NSA_PDL");
  EXPECT_EQ(cuda::ChainedLaunchesOn(), major >= 9 && !(pdl && std::string(pdl) == "0"))
      << "chained launches are on exactly on sm_90 and later, unless NSA_PDL=0";
  int *a, *b;
  CUDA_OK(cudaMalloc(&a, kElements * sizeof(int)));
  CUDA_OK(cudaMalloc(&b, kElements * sizeof(int)));
  std::vector<int> init(kElements);
  for (int i = 0; i < kElements; ++i) init[i] = i;
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));

  CUDA_OK(cudaMemcpy(a, init.data(), kElements * sizeof(int), cudaMemcpyHostToDevice));
  LaunchChain(a, b, stream);
  CUDA_OK(cudaStreamSynchronize(stream));
  Check(a, kKernels);

  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  LaunchChain(a, b, stream);
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  CUDA_OK(cudaMemcpy(a, init.data(), kElements * sizeof(int), cudaMemcpyHostToDevice));
  for (int replay = 1; replay <= 3; ++replay) {
    CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    Check(a, replay * kKernels);
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  cudaFree(a);
  cudaFree(b);
}

}  // namespace
}  // namespace nsa
