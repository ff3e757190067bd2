#include "kernels/reference/ops.h"

#include <cmath>

namespace nsa::ref {

float Dot(const float* a, const float* b, int n) {
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) lane[j] += a[i + j] * b[i + j];
  }
  for (; i < n; ++i) lane[i & 7] += a[i] * b[i];
  return ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
}

void Linear(const float* x, int rows, int in, const float* w, int out, const float* bias, float* y) {
  // Parallel over output features: each thread streams its slice of w once and reuses it for all
  // rows, which is what matters for decode (rows = 1, w much larger than x).
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(out) * in * rows > (int64_t{1} << 22))
  for (int o = 0; o < out; ++o) {
    const float* wo = w + static_cast<int64_t>(o) * in;
    const float b = bias ? bias[o] : 0.0f;
    for (int r = 0; r < rows; ++r) {
      y[static_cast<int64_t>(r) * out + o] = Dot(x + static_cast<int64_t>(r) * in, wo, in) + b;
    }
  }
}

void RmsNorm(const float* x, int rows, int dim, const float* weight, float eps, float* y) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<int64_t>(r) * dim;
    float* yr = y + static_cast<int64_t>(r) * dim;
    const float inv = 1.0f / std::sqrt(Dot(xr, xr, dim) / dim + eps);
    for (int i = 0; i < dim; ++i) yr[i] = xr[i] * inv * weight[i];
  }
}

void ApplyRope(float* x, int num_heads, int head_dim, int64_t position, double theta) {
  const int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    // Double precision angle: at 128k positions a float32 product is off by ~1e-2 radians.
    const double angle = static_cast<double>(position) * std::pow(theta, -2.0 * i / head_dim);
    const float c = static_cast<float>(std::cos(angle));
    const float s = static_cast<float>(std::sin(angle));
    for (int h = 0; h < num_heads; ++h) {
      float* v = x + static_cast<int64_t>(h) * head_dim;
      const float a = v[i], b = v[i + half];
      v[i] = a * c - b * s;
      v[i + half] = b * c + a * s;
    }
  }
}

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

}  // namespace nsa::ref
