// Does ptxas (CUDA 13.0, sm_90a) keep the meaning of a clamp followed by an equality test?
// (thirteenth session; bench/NOTES.md, "The prefill warp-split fault")
// The twelfth session's split walk computed a warp's visible rows as rows = clamp(x, 0, 16), took
// the unmasked path when rows == 16 and heads == 16, and failed: rows of one visible key took the
// unmasked path. Its SASS computes the clamp and the test in one instruction,
// `VIMNMX.RELU R, P1, P1, x, 0x10`, and branches on `@P1 BRA P0`; the PTX says
// `min.s32; max.s32; setp.eq.s32 ..., 16`. This probe runs the same source pattern over
// x = -4 .. 40 and a few neighbours of it, and compares every thread's path with the host's.
//   minmax_probe     (prints each form's mismatches; exit status 1 if any)
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

// path: 0 when rows == 0, 2 when heads == 16 and rows == 16, else 1 -- the split walk's choice.
template <int kForm>
__global__ void ClampThenTest(const int* x, int n, int heads, int* path, int* rows_out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int v = x[i];
  int rows;
  if constexpr (kForm == 0) {
    rows = v < 0 ? 0 : v < 16 ? v : 16;  // the failing source's form
  } else if constexpr (kForm == 1) {
    rows = max(min(v, 16), 0);
  } else {
    rows = min(max(v, 0), 16);
  }
  int p = 0;
  if (rows > 0) p = heads == 16 && rows == 16 ? 2 : 1;
  path[i] = p;
  rows_out[i] = rows;
}

template <int kForm>
int Run(const int* dx, int n, int heads, int* dpath, int* drows, const std::vector<int>& x) {
  ClampThenTest<kForm><<<(n + 127) / 128, 128>>>(dx, n, heads, dpath, drows);
  std::vector<int> path(n), rows(n);
  cudaMemcpy(path.data(), dpath, n * sizeof(int), cudaMemcpyDeviceToHost);
  cudaMemcpy(rows.data(), drows, n * sizeof(int), cudaMemcpyDeviceToHost);
  int bad = 0;
  for (int i = 0; i < n; ++i) {
    const int want_rows = x[i] < 0 ? 0 : x[i] < 16 ? x[i] : 16;
    const int want = want_rows == 0 ? 0 : heads == 16 && want_rows == 16 ? 2 : 1;
    if (path[i] != want || rows[i] != want_rows) {
      if (bad < 8) std::printf("  form %d heads %d: x = %d: path %d rows %d, expected %d %d\n", kForm, heads, x[i], path[i], rows[i], want, want_rows);
      ++bad;
    }
  }
  std::printf("form %d heads %d: %d of %d threads took another path\n", kForm, heads, bad, n);
  return bad;
}

int main() {
  std::vector<int> x;
  for (int v = -4; v <= 40; ++v) x.push_back(v);
  const int n = static_cast<int>(x.size());
  int *dx, *dpath, *drows;
  if (cudaMalloc(&dx, n * sizeof(int)) != cudaSuccess) {
    std::fprintf(stderr, "no CUDA device\n");
    return 2;
  }
  cudaMalloc(&dpath, n * sizeof(int));
  cudaMalloc(&drows, n * sizeof(int));
  cudaMemcpy(dx, x.data(), n * sizeof(int), cudaMemcpyHostToDevice);
  int bad = 0;
  for (int heads : {16, 8}) {
    bad += Run<0>(dx, n, heads, dpath, drows, x);
    bad += Run<1>(dx, n, heads, dpath, drows, x);
    bad += Run<2>(dx, n, heads, dpath, drows, x);
  }
  if (cudaDeviceSynchronize() != cudaSuccess) return 2;
  return bad ? 1 : 0;
}
