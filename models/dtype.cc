// Weight element types and their conversion to and from float32 (bf16 and fp16 round to nearest
// even; NaN, infinities and fp16 subnormals are kept).
#include "models/dtype.h"

#include <cstdint>
#include <cstring>

namespace nsa {
namespace {

uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

float HalfToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1F;
  uint32_t mantissa = h & 0x3FF;
  if (exponent == 0) {
    // Zero or subnormal: mantissa x 2^-24 is exact in float.
    float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return BitsFloat(FloatBits(magnitude) | sign);
  }
  if (exponent == 31) return BitsFloat(sign | 0x7F800000u | (mantissa << 13));
  return BitsFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

uint16_t FloatToHalf(float f) {
  uint32_t x = FloatBits(f);
  uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  x &= 0x7FFFFFFFu;
  if (x >= 0x7F800000u) {
    if (x == 0x7F800000u) return sign | 0x7C00;
    // Keep NaN quiet and the top payload bits, as hardware converters do.
    return static_cast<uint16_t>(sign | 0x7E00 | ((x >> 13) & 0x3FF));
  }
  // 65520 is halfway between 65504 (the largest half) and 65536; ties-to-even rounds it up.
  if (x >= 0x477FF000u) return sign | 0x7C00;
  if (x < 0x38800000u) {
    // Below 2^-14 the result is a half subnormal, in units of 2^-24. Up to 2^-25 (a tie with
    // zero, which is even) everything rounds to zero.
    if (x <= 0x33000000u) return sign;
    uint32_t exponent = x >> 23;  // 102..112 here
    uint32_t mantissa = (x & 0x7FFFFFu) | 0x800000u;
    uint32_t shift = 126 - exponent;  // 14..24
    uint32_t result = mantissa >> shift;
    uint32_t remainder = mantissa & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (remainder > half || (remainder == half && (result & 1))) ++result;
    return static_cast<uint16_t>(sign | result);  // may carry into the smallest normal: right
  }
  uint32_t rebased = x - (112u << 23);
  uint32_t rounded = (rebased + 0xFFFu + ((rebased >> 13) & 1)) >> 13;
  return static_cast<uint16_t>(sign | rounded);
}

float BFloatToFloat(uint16_t b) { return BitsFloat(static_cast<uint32_t>(b) << 16); }

uint16_t FloatToBFloat(float f) {
  uint32_t x = FloatBits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) {
    // Truncating could turn a NaN with only low payload bits into infinity; force it quiet.
    return static_cast<uint16_t>((x >> 16) | 0x0040);
  }
  // Overflow past the largest finite value correctly carries into infinity.
  return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1)) >> 16);
}

}  // namespace

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
  }
  return 0;
}


void ConvertToFloat(DType dtype, const std::byte* src, size_t count, float* dst) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, count * sizeof(float));
      return;
    case DType::kF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = HalfToFloat(h);
      }
      return;
    case DType::kBF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t b;
        std::memcpy(&b, src + 2 * i, 2);
        dst[i] = BFloatToFloat(b);
      }
      return;
  }
}

void ConvertFromFloat(DType dtype, const float* src, size_t count, std::byte* dst) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, count * sizeof(float));
      return;
    case DType::kF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t h = FloatToHalf(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    case DType::kBF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t b = FloatToBFloat(src[i]);
        std::memcpy(dst + 2 * i, &b, 2);
      }
      return;
  }
}

void RoundToBFloat16(float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = BFloatToFloat(FloatToBFloat(x[i]));
}

}  // namespace nsa
