// The AVX2 matmul path: a 16-lane vector is two ymm registers (lanes 0-7, 8-15). F16C converts F16
// weights; no FMA (a fused multiply-add would round differently from the other paths).
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/numerics.h"
#include "kernels/cpu/quant.h"

#pragma GCC push_options
#pragma GCC target("avx2,f16c")

namespace kvfold::cpu {
namespace {

struct V {
  static constexpr int kRows = 2;
  static constexpr int kTokens = 2;
  __m256 lo, hi;

  static V Zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static V Broadcast(float f) { return {_mm256_set1_ps(f), _mm256_set1_ps(f)}; }
  static V Load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  static __m256 Bf16x8(const uint16_t* p) {
    const __m256i wide =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static V LoadBf16(const uint16_t* p) { return {Bf16x8(p), Bf16x8(p + 8)}; }
  static V LoadF16(const uint16_t* p) {
    return {_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)))};
  }
  static V Add(const V& a, const V& b) {
    return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)};
  }
  static V Mul(const V& a, const V& b) {
    return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)};
  }
  static float Reduce(const V& a) {
    const __m256 s8 = _mm256_add_ps(a.lo, a.hi);  // lane j += lane j + 8
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
  }
};

#include "kernels/cpu/matmul_kernel.inc"

}  // namespace

void MatMulRowsAvx2(const float* x, int64_t num_tokens, int64_t k, const void* w, DType w_dtype,
                    const float* bias, int64_t row_begin, int64_t row_end, float* out,
                    int64_t out_stride) {
  MatMulRowsIsa(x, num_tokens, k, w, w_dtype, bias, row_begin, row_end, out, out_stride);
}

}  // namespace kvfold::cpu

#pragma GCC pop_options
