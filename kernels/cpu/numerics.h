// Scalar conversions and the fixed-order reductions every CPU kernel uses.
#pragma once

#include <cstdint>
#include <cstring>

namespace kvfold::cpu {

inline float Bf16ToF32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  uint32_t bits;
  if (exponent == 0x1f) {  // inf / nan
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {  // normal
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // zero
    bits = sign;
  } else {  // subnormal: renormalise
    exponent = 113;
    while ((mantissa & 0x400) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Round-to-nearest-even F32 -> BF16 (KV cache storage; NaN stays NaN).
inline uint16_t F32ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

// Hot loops are compiled for several ISAs; the loader picks the best the machine supports.
// Without -ffp-contract=fast no clone fuses multiply-adds, so every clone gives the same bits.
#define KVFOLD_ISA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

// Weight element loaders: one per storage type.
struct LoadF32 {
  float operator()(const void* p, int64_t i) const { return static_cast<const float*>(p)[i]; }
};
struct LoadBf16 {
  float operator()(const void* p, int64_t i) const {
    return Bf16ToF32(static_cast<const uint16_t*>(p)[i]);
  }
};
struct LoadF16 {
  float operator()(const void* p, int64_t i) const {
    return F16ToF32(static_cast<const uint16_t*>(p)[i]);
  }
};

// Σ x[i]·load(w, i) over [0, n) in one fixed order: 16 interleaved partial sums (so the compiler
// vectorises without reassociating), a fixed pairwise tree, then the tail in sequence. The order
// depends on n alone.
constexpr int kLanes = 16;

template <typename Load>
inline float Dot(const float* x, const void* w, int64_t n, Load load) {
  if (n < kLanes) {  // the same order as below, minus a tree of zeros (head_dim 8, say)
    float sum = 0.0f;
    for (int64_t i = 0; i < n; ++i) sum += x[i] * load(w, i);
    return sum;
  }
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += x[i + j] * load(w, i + j);
  }
  for (int width = kLanes / 2; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) acc[j] += acc[j + width];
  }
  float sum = acc[0];
  for (; i < n; ++i) sum += x[i] * load(w, i);
  return sum;
}

inline float SumSquares(const float* x, int64_t n) { return Dot(x, x, n, LoadF32()); }

}  // namespace kvfold::cpu
