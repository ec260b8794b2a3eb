#include "kernels/cpu/matmul.h"

#include "kernels/cpu/numerics.h"

namespace kvfold::cpu {
namespace {

// Weight-row-outer: each weight row stays in cache while every token uses it. Each output element
// is one Dot, so its value never depends on num_tokens or on the row range.
template <typename Load>
void MatMulRowsImpl(const float* x, int64_t num_tokens, int64_t k, const void* w,
                    int64_t w_elem_bytes, const float* bias, int64_t row_begin, int64_t row_end,
                    float* out, int64_t out_stride) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const void* w_row = static_cast<const char*>(w) + r * k * w_elem_bytes;
    const float b = bias ? bias[r] : 0.0f;
    for (int64_t t = 0; t < num_tokens; ++t) {
      out[t * out_stride + r] = Dot(x + t * k, w_row, k, Load()) + b;
    }
  }
}

KVFOLD_ISA_CLONES void MatMulRowsF32(const float* x, int64_t n, int64_t k, const void* w,
                                     const float* bias, int64_t r0, int64_t r1, float* out,
                                     int64_t stride) {
  MatMulRowsImpl<LoadF32>(x, n, k, w, 4, bias, r0, r1, out, stride);
}

KVFOLD_ISA_CLONES void MatMulRowsBf16(const float* x, int64_t n, int64_t k, const void* w,
                                      const float* bias, int64_t r0, int64_t r1, float* out,
                                      int64_t stride) {
  MatMulRowsImpl<LoadBf16>(x, n, k, w, 2, bias, r0, r1, out, stride);
}

KVFOLD_ISA_CLONES void MatMulRowsF16(const float* x, int64_t n, int64_t k, const void* w,
                                     const float* bias, int64_t r0, int64_t r1, float* out,
                                     int64_t stride) {
  MatMulRowsImpl<LoadF16>(x, n, k, w, 2, bias, r0, r1, out, stride);
}

}  // namespace

void MatMulRows(const float* x, int64_t num_tokens, int64_t k, const void* w, DType w_dtype,
                const float* bias, int64_t row_begin, int64_t row_end, float* out,
                int64_t out_stride) {
  switch (w_dtype) {
    case DType::kF32:
      return MatMulRowsF32(x, num_tokens, k, w, bias, row_begin, row_end, out, out_stride);
    case DType::kBF16:
      return MatMulRowsBf16(x, num_tokens, k, w, bias, row_begin, row_end, out, out_stride);
    case DType::kF16:
      return MatMulRowsF16(x, num_tokens, k, w, bias, row_begin, row_end, out, out_stride);
  }
}

}  // namespace kvfold::cpu
