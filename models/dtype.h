// Weight element types and conversions to and from float32.
#pragma once

#include <cstddef>

namespace nsa {

enum class DType { kF32, kF16, kBF16 };

size_t DTypeSize(DType dtype);

// Converts `count` elements of `dtype` at `src` to float32.
void ConvertToFloat(DType dtype, const std::byte* src, size_t count, float* dst);
// Converts float32 to `dtype` (bf16 and fp16 round to nearest even).
void ConvertFromFloat(DType dtype, const float* src, size_t count, std::byte* dst);
// Rounds every element of x[0, n) to the nearest bf16 value (ties to even), in place.
void RoundToBFloat16(float* x, size_t n);

}  // namespace nsa
