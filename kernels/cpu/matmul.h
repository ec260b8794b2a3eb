// y = x · wᵀ (+ bias) over a range of weight rows, for every weight dtype (quantized ones natively,
// block by block), with one implementation per SIMD path (isa.h). All paths give the same bits.
#pragma once

#include <cstdint>

#include "kernels/cpu/isa.h"
#include "kernels/ops.h"

namespace kvfold::cpu {

// Computes out[t, r] for every token t < num_tokens and weight row r in [row_begin, row_end).
// x is [num_tokens, k], w is [*, k] in `w_dtype` (rows RowBytes(w_dtype, k) apart), out is
// [num_tokens, out_stride].
using MatMulRowsFn = void (*)(const float* x, int64_t num_tokens, int64_t k, const void* w,
                              DType w_dtype, const float* bias, int64_t row_begin, int64_t row_end,
                              float* out, int64_t out_stride);

// The implementation for `isa`, which must be supported (IsaSupported).
MatMulRowsFn MatMulRowsFor(Isa isa);

}  // namespace kvfold::cpu
