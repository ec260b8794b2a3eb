// The AVX-512 matmul path: a 16-lane vector is one zmm register. No FMA (see matmul_avx2.cc), and
// no AVX512-BF16 dot products: vdpbf16ps rounds the activations to BF16 and sums pairs, which would
// change both precision and order; widening BF16 weights is one shift, and the loop is
// bandwidth-bound anyway.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/numerics.h"
#include "kernels/cpu/quant.h"

// GCC 12's avx512fintrin.h self-initialises its _mm512_undefined_* values (a known false positive).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,f16c")

namespace kvfold::cpu {
namespace {

struct V {
  static constexpr int kRows = 4;
  static constexpr int kTokens = 4;
  __m512 v;

  static __m128i Load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
  static __m256i Load256(const void* p) {
    return _mm256_loadu_si256(static_cast<const __m256i*>(p));
  }
  static V Zero() { return {_mm512_setzero_ps()}; }
  static V Broadcast(float f) { return {_mm512_set1_ps(f)}; }
  static V Load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static V LoadBf16(const uint16_t* p) {
    return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(Load256(p)), 16))};
  }
  static V LoadF16(const uint16_t* p) { return {_mm512_cvtph_ps(Load256(p))}; }
  static V Add(const V& a, const V& b) { return {_mm512_add_ps(a.v, b.v)}; }
  static V Mul(const V& a, const V& b) { return {_mm512_mul_ps(a.v, b.v)}; }
  static float Reduce(const V& a) {
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a.v), 1));
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(a.v), hi);  // lane j += lane j + 8
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
  }
};

#include "kernels/cpu/matmul_kernel.inc"

}  // namespace

void MatMulRowsAvx512(const float* x, int64_t num_tokens, int64_t k, const void* w, DType w_dtype,
                      const float* bias, int64_t row_begin, int64_t row_end, float* out,
                      int64_t out_stride) {
  MatMulRowsIsa(x, num_tokens, k, w, w_dtype, bias, row_begin, row_end, out, out_stride);
}

}  // namespace kvfold::cpu

#pragma GCC pop_options
