// Plain float32 CPU operators: the readable twins of the CUDA kernels and the CPU backend's math.
// Row-major everywhere. Functions that take `rows` process independent rows; the parallel ones
// split work over OpenMP threads without changing any row's arithmetic, so a row computed alone
// (decode) and among many (prefill) gives bit-identical results.
#pragma once

#include <cstdint>

namespace nsa::ref {

// Dot product with a fixed 8-lane summation order (vectorises, and is the same for every caller).
float Dot(const float* a, const float* b, int n);

// y[r][o] = x[r] . w[o] (+ bias[o]).  x: [rows][in], w: [out][in] (PyTorch Linear layout), y: [rows][out].
void Linear(const float* x, int rows, int in, const float* w, int out, const float* bias, float* y);

// y[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * weight.  x, y: [rows][dim]; may alias.
void RmsNorm(const float* x, int rows, int dim, const float* weight, float eps, float* y);

// Rotate-half RoPE, in place, for `num_heads` vectors of `head_dim` at one position:
// out[i] = x[i] cos - x[i + h] sin, out[i + h] = x[i + h] cos + x[i] sin, angle = pos * theta^(-2i/d).
void ApplyRope(float* x, int num_heads, int head_dim, int64_t position, double theta);

// out[i] = silu(gate[i]) * up[i].
void SiluMul(const float* gate, const float* up, int64_t n, float* out);


}  // namespace nsa::ref
