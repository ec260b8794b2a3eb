// The AVX-512 VNNI quantized matmul: two blocks (one zmm of 64 int8) per step; one vpdpbusd gives
// the 16 lane partials of both. vpdpbusd multiplies unsigned by signed bytes, so signed weights are
// stored offset (w_q + kOffset) and the offset times the activation's lane sums is subtracted,
// exactly.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "glog/logging.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/numerics.h"
#include "kernels/cpu/quant.h"

// GCC 12's avx512fintrin.h self-initialises its _mm512_undefined_* values (a known false positive).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,f16c")

namespace kvfold::cpu {
namespace {

struct Q {
  static constexpr int kStep = 2;
  static constexpr int kRows = 4;
  static constexpr int kTokens = 4;
  // Q4 weights decode cheapest as 128-bit lanes {low nibbles of block b, of b + 1, high nibbles of
  // b, of b + 1}, so Q4 activations are loaded in that order too and the accumulators' lanes are
  // {0-3, 8-11, 4-7, 12-15}: Finish swaps the middle 128-bit lanes back before the tree. Q8_0
  // keeps the natural order (lanes 0-7 block b, 8-15 block b + 1).
  template <class F>
  static constexpr bool kSwapped = F::kOffset != 128;

  struct Acc {
    __m512 v;
    __m128 mins;  // lane 1: even blocks' m_w · s, lane 3: odd blocks' (lanes 0, 2 unused)
  };
  struct W {
    __m512i q;  // w_q + kOffset, unsigned
    __m128 sc;  // {d, m} of block b, then of block b + 1 (m unused without a min; 0s past the row)
  };
  struct X {
    __m512i q;
    __m512i minus_offset_sums;  // -kOffset · Σ x_q per lane
    __m128 sc;                  // {d, s} of block b, then of block b + 1
  };

  static __m128i Load128(const uint8_t* p) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  }
  static __m256i Load256(const void* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }

  static Acc Zero() { return {_mm512_setzero_ps(), _mm_setzero_ps()}; }

  template <class F, int kCount>
  static W LoadW(const uint8_t* block) {
    const uint8_t* next = block + F::kBytes;
    // {d, m} (or d and two bytes of q, whose lane is never read) of both blocks, without a trip
    // through general registers: a 32-bit load and a broadcast load blended.
    __m128i bits = _mm_loadu_si32(block);
    if constexpr (kCount == 2) {
      float next_bits;
      std::memcpy(&next_bits, next, 4);
      bits = _mm_blend_epi32(bits, _mm_castps_si128(_mm_set1_ps(next_bits)), 0x2);
    }
    W w;
    w.sc = _mm_cvtph_ps(bits);
    if constexpr (F::kOffset == 128) {
      const __m256i hi = kCount == 2 ? Load256(next + F::kQs) : _mm256_setzero_si256();
      w.q = _mm512_xor_si512(
          _mm512_inserti64x4(_mm512_castsi256_si512(Load256(block + F::kQs)), hi, 1),
          _mm512_set1_epi8(static_cast<char>(0x80)));
    } else {
      const __m512i q0 = _mm512_broadcast_i32x4(Load128(block + F::kQs));
      const __m512i q1 =
          kCount == 2 ? _mm512_broadcast_i32x4(Load128(next + F::kQs)) : _mm512_setzero_si512();
      const __m512i both = _mm512_mask_blend_epi64(0xCC, q0, q1);  // q0 q1 q0 q1
      const __m512i shifted = _mm512_mask_srli_epi16(both, 0xFFFF0000u, both, 4);
      w.q = _mm512_and_si512(shifted, _mm512_set1_epi8(15));  // lo0 lo1 hi0 hi1
    }
    return w;
  }

  template <class F, int kCount>
  static X LoadX(const Q8Activations& x, int64_t t, int64_t b) {
    X out;
    const int8_t* q = x.Q(t, b);
    const float* sc = x.Scales(t, b);
    if (kCount == 2) {
      out.q = _mm512_loadu_si512(q);
      out.sc = _mm_loadu_ps(sc);
    } else {
      out.q = _mm512_zextsi256_si512(Load256(q));
      out.sc = _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc)));
    }
    if constexpr (kSwapped<F>) out.q = _mm512_shuffle_i64x2(out.q, out.q, _MM_SHUFFLE(3, 1, 2, 0));
    out.minus_offset_sums = _mm512_setzero_si512();
    if constexpr (F::kOffset != 0) {
      const __m512i sums = _mm512_dpbusd_epi32(
          _mm512_setzero_si512(), _mm512_set1_epi8(static_cast<char>(F::kOffset)), out.q);
      out.minus_offset_sums = _mm512_sub_epi32(_mm512_setzero_si512(), sums);
    }
    return out;
  }

  template <class F, int kCount>
  static void Step(const W& w, const X& x, int64_t, Acc& acc) {
    const __m512i p = _mm512_dpbusd_epi32(x.minus_offset_sums, w.q, x.q);
    const __m128 prod = _mm_mul_ps(w.sc, x.sc);  // {dd0, ms0, dd1, ms1}
    const __m512i index = kSwapped<F>
                              ? _mm512_set_epi32(2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0)
                              : _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512 dd = _mm512_permutexvar_ps(index, _mm512_castps128_ps512(prod));
    acc.v = _mm512_add_ps(acc.v, _mm512_mul_ps(_mm512_cvtepi32_ps(p), dd));
    if constexpr (F::kMin) acc.mins = _mm_add_ps(acc.mins, prod);  // past the row: + 0
  }

  template <class F>
  static float Finish(const Acc& a) {
    __m512 v = a.v;
    if constexpr (kSwapped<F>) v = _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(3, 1, 2, 0));
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), hi);  // acc j += acc j + 8
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    const float y = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
    if constexpr (!F::kMin) return y;
    const float even = _mm_cvtss_f32(_mm_shuffle_ps(a.mins, a.mins, 1));
    const float odd = _mm_cvtss_f32(_mm_shuffle_ps(a.mins, a.mins, 3));
    return y + (even + odd);
  }
};

#include "kernels/cpu/qmatmul_kernel.inc"

}  // namespace

void QMatMulRowsAvx512(const Q8Activations& x, const void* w, DType w_dtype, const float* bias,
                       int64_t row_begin, int64_t row_end, float* out, int64_t out_stride) {
  QMatMulRowsIsa(x, w, w_dtype, bias, row_begin, row_end, out, out_stride);
}

}  // namespace kvfold::cpu

#pragma GCC pop_options
