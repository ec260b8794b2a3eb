// Fixed-order vector arithmetic of the CPU attention kernels, written with GCC vector extensions
// over W lanes, W the native width of an ISA path (4 generic, 8 AVX2, 16 AVX-512). Every helper
// performs the same IEEE operations lane by lane whatever W, with no fused multiply-adds
// (kernels build with -ffp-contract=off), so every ISA path gives the same bits. The helpers are
// always inlined into an ISA entry point (a function with a target attribute).
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/cpu/numerics.h"

// Wide vectors are only passed between always-inlined helpers, so the ABI that -Wpsabi warns
// about never applies; the warning is off for every file that includes this header (GCC reports
// it where the helpers are instantiated, not only here).
#pragma GCC diagnostic ignored "-Wpsabi"

namespace kvfold::cpu {

// W F32 lanes as a GCC vector, W the native width of the ISA path (4 generic, 8 AVX2, 16
// AVX-512). Every path computes the same per-lane operations on the same elements, so the vector
// width changes speed only.
template <int W>
struct Vec;
#define KVFOLD_VEC_TYPES(w)                                   \
  template <>                                                 \
  struct Vec<w> {                                             \
    typedef float F32 __attribute__((vector_size(w * 4)));    \
    typedef uint16_t U16 __attribute__((vector_size(w * 2))); \
    typedef uint32_t U32 __attribute__((vector_size(w * 4))); \
    typedef int32_t I32 __attribute__((vector_size(w * 4)));  \
  };
KVFOLD_VEC_TYPES(2)
KVFOLD_VEC_TYPES(4)
KVFOLD_VEC_TYPES(8)
KVFOLD_VEC_TYPES(16)
#undef KVFOLD_VEC_TYPES
template <int W>
using FloatVec = typename Vec<W>::F32;
template <int W>
using U16Vec = typename Vec<W>::U16;
template <int W>
using U32Vec = typename Vec<W>::U32;
template <int W>
using I32Vec = typename Vec<W>::I32;

template <int W>
__attribute__((always_inline)) inline FloatVec<W> LoadVec(LoadF32, const void* p, int64_t i) {
  FloatVec<W> v;
  std::memcpy(&v, static_cast<const float*>(p) + i, sizeof(v));
  return v;
}
template <int W>
__attribute__((always_inline)) inline FloatVec<W> LoadVec(LoadBf16, const void* p, int64_t i) {
  U16Vec<W> h;
  std::memcpy(&h, static_cast<const uint16_t*>(p) + i, sizeof(h));
  const U32Vec<W> bits = __builtin_convertvector(h, U32Vec<W>) << 16;
  FloatVec<W> v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

// The tree of numerics.h's Dot over 16 partial sums held in 16 / W vectors: lane j += lane
// j + width for width 8, 4, 2, 1; returns lane 0.
template <int W>
__attribute__((always_inline)) inline float ReduceLanes(const FloatVec<W>* acc) {
  FloatVec<4> a4;
  if constexpr (W == 16) {
    const FloatVec<8> a8 = __builtin_shufflevector(acc[0], acc[0], 0, 1, 2, 3, 4, 5, 6, 7) +
                           __builtin_shufflevector(acc[0], acc[0], 8, 9, 10, 11, 12, 13, 14, 15);
    a4 = __builtin_shufflevector(a8, a8, 0, 1, 2, 3) + __builtin_shufflevector(a8, a8, 4, 5, 6, 7);
  } else if constexpr (W == 8) {
    const FloatVec<8> a8 = acc[0] + acc[1];
    a4 = __builtin_shufflevector(a8, a8, 0, 1, 2, 3) + __builtin_shufflevector(a8, a8, 4, 5, 6, 7);
  } else {
    static_assert(W == 4);
    a4 = (acc[0] + acc[2]) + (acc[1] + acc[3]);
  }
  const FloatVec<2> a2 =
      __builtin_shufflevector(a4, a4, 0, 1) + __builtin_shufflevector(a4, a4, 2, 3);
  return a2[0] + a2[1];
}

// numerics.h's Dot, bit for bit, for n a positive multiple of 16: 16 interleaved partial sums
// (lane j sums elements i ≡ j mod 16) held in 16 / W vectors, then the tree lane j += lane
// j + width for width 8, 4, 2, 1.
template <int W, typename Load>
__attribute__((always_inline)) inline float DotVec(const float* x, const void* w, int64_t n,
                                                   Load load) {
  constexpr int kParts = 16 / W;
  FloatVec<W> acc[kParts] = {};
  for (int64_t i = 0; i < n; i += 16) {
    for (int c = 0; c < kParts; ++c) {
      acc[c] += LoadVec<W>(LoadF32(), x, i + c * W) * LoadVec<W>(load, w, i + c * W);
    }
  }
  return ReduceLanes<W>(acc);
}

// exp(x) for x <= 0 (softmax's exp(s - max)) from IEEE multiplies and adds only (Cephes' expf
// scheme: x = n ln2 + r, |r| <= ln2 / 2, a degree-7 polynomial for exp(r), times 2^n; about 1 ulp),
// so that the loop over positions vectorises on every ISA path with the same bits, where a call
// to libm's expf would run one position at a time. Below -87.3 (2^-126) it returns 0.
__attribute__((always_inline)) inline float ExpNonPositive(float x) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float clamped = x < -87.3f ? -87.3f : x;
  const float n = (clamped * kLog2e + kRound) - kRound;
  const float r = (clamped - n * kLn2Hi) - n * kLn2Lo;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 0]
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.3f ? 0.0f : y * scale;
}

// ExpNonPositive on W lanes at once, the same operations lane by lane (so the same bits).
template <int W>
__attribute__((always_inline)) inline FloatVec<W> ExpNonPositiveVec(FloatVec<W> x) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;
  const FloatVec<W> low = FloatVec<W>{} - 87.3f;  // every lane -87.3
  const I32Vec<W> below = x < low;
  const FloatVec<W> clamped = below ? low : x;
  const FloatVec<W> n = (clamped * kLog2e + kRound) - kRound;
  const FloatVec<W> r = (clamped - n * kLn2Hi) - n * kLn2Lo;
  FloatVec<W> y = r * 1.9875691500e-4f + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const I32Vec<W> bits = (__builtin_convertvector(n, I32Vec<W>) + 127) << 23;
  FloatVec<W> scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const FloatVec<W> zero = {};
  return below ? zero : y * scale;
}

// p[t] = ExpNonPositive(p[t] - shift) over [0, n).
template <int W>
__attribute__((always_inline)) inline void ExpShifted(float* p, int32_t n, float shift) {
  int32_t t = 0;
  for (; t + W <= n; t += W) {
    const FloatVec<W> e = ExpNonPositiveVec<W>(LoadVec<W>(LoadF32(), p, t) - shift);
    std::memcpy(p + t, &e, sizeof(e));
  }
  for (; t < n; ++t) p[t] = ExpNonPositive(p[t] - shift);
}

// Σ p[t] over [0, n) in numerics.h's Dot order (16 interleaved partial sums, the pairwise tree,
// then the tail in sequence), with the partial sums in vector registers.
template <int W>
__attribute__((always_inline)) inline float SumVec(const float* p, int64_t n) {
  constexpr int kParts = 16 / W;
  FloatVec<W> acc[kParts] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int c = 0; c < kParts; ++c) acc[c] += LoadVec<W>(LoadF32(), p, i + c * W);
  }
  float sum = ReduceLanes<W>(acc);
  for (; i < n; ++i) sum += p[i];
  return sum;
}

}  // namespace kvfold::cpu
