// The AVX2 quantized matmul: one block (one ymm of 32 int8) per step; maddubs + madd give the 8
// lane partials. maddubs multiplies unsigned by signed bytes, so signed weights (Q8_0, Q4_0) use
// llama.cpp's sign trick: |w| · (x with w's sign), at most 2 · 128 · 127 per pair (no saturation).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "glog/logging.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/numerics.h"
#include "kernels/cpu/quant.h"

#pragma GCC push_options
#pragma GCC target("avx2,f16c")

namespace kvfold::cpu {
namespace {

struct Q {
  static constexpr int kStep = 1;
  static constexpr int kRows = 2;
  static constexpr int kTokens = 2;
  struct Acc {
    __m256 lo, hi;  // accumulators 0-7 (even blocks), 8-15 (odd blocks)
    float mins[2];  // even, odd blocks
  };
  struct W {
    __m256i q;  // Q8_0, Q4_0: signed w_q; Q4_1: unsigned nibbles
    float d, m;
  };
  struct X {
    __m256i q;
    float d, s;
  };

  static float HalfToFloat(const uint8_t* p) {
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(LoadU16(p))));
  }

  static Acc Zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps(), {0.0f, 0.0f}}; }

  template <class F, int kCount>
  static W LoadW(const uint8_t* block) {
    W w;
    w.d = HalfToFloat(block);
    w.m = F::kMin ? HalfToFloat(block + 2) : 0.0f;
    if constexpr (F::kOffset == 128) {
      w.q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + F::kQs));
    } else {
      const __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + F::kQs));
      const __m128i mask = _mm_set1_epi8(15);
      const __m128i lo = _mm_and_si128(qs, mask), hi = _mm_and_si128(_mm_srli_epi16(qs, 4), mask);
      w.q = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
      if constexpr (F::kOffset != 0) w.q = _mm256_sub_epi8(w.q, _mm256_set1_epi8(F::kOffset));
    }
    return w;
  }

  template <class F, int kCount>
  static X LoadX(const Q8Activations& x, int64_t t, int64_t b) {
    const float* sc = x.Scales(t, b);
    return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.Q(t, b))), sc[0], sc[1]};
  }

  template <class F, int kCount>
  static void Step(const W& w, const X& x, int64_t b, Acc& acc) {
    __m256i pairs;
    if constexpr (F::kOffset == 0) {
      pairs = _mm256_maddubs_epi16(w.q, x.q);
    } else {
      pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w.q, w.q), _mm256_sign_epi8(x.q, w.q));
    }
    const __m256i p = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
    const __m256 term = _mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(w.d * x.d));
    if (b % 2 == 0) {
      acc.lo = _mm256_add_ps(acc.lo, term);
    } else {
      acc.hi = _mm256_add_ps(acc.hi, term);
    }
    if constexpr (F::kMin) acc.mins[b % 2] += w.m * x.s;
  }

  template <class F>
  static float Finish(const Acc& a) {
    const __m256 s8 = _mm256_add_ps(a.lo, a.hi);  // acc j += acc j + 8
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    const float y = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
    return F::kMin ? y + (a.mins[0] + a.mins[1]) : y;
  }
};

#include "kernels/cpu/qmatmul_kernel.inc"

}  // namespace

void QMatMulRowsAvx2(const Q8Activations& x, const void* w, DType w_dtype, const float* bias,
                     int64_t row_begin, int64_t row_end, float* out, int64_t out_stride) {
  QMatMulRowsIsa(x, w, w_dtype, bias, row_begin, row_end, out, out_stride);
}

}  // namespace kvfold::cpu

#pragma GCC pop_options
