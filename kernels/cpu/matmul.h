// y = x · wᵀ (+ bias) over a range of weight rows, specialised per weight dtype and compiled for
// several ISAs (the loader picks the best the machine supports).
#pragma once

#include <cstdint>

#include "kernels/ops.h"

namespace kvfold::cpu {

// Computes out[t, r] for every token t < num_tokens and weight row r in [row_begin, row_end).
// x is [num_tokens, k], w is [*, k] in `w_dtype`, out is [num_tokens, out_stride].
void MatMulRows(const float* x, int64_t num_tokens, int64_t k, const void* w, DType w_dtype,
                const float* bias, int64_t row_begin, int64_t row_end, float* out,
                int64_t out_stride);

}  // namespace kvfold::cpu
