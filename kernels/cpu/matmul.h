// y = x · wᵀ (+ bias) over a range of weight rows, with one implementation per SIMD path (isa.h);
// all paths give the same bits. F32/F16/BF16 weights multiply F32 activations (matmul_kernel.inc);
// quantized weights multiply Q8-quantized activations in integers (qmatmul_kernel.inc).
#pragma once

#include <cstdint>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/quantize_activations.h"
#include "kernels/ops.h"

namespace kvfold::cpu {

// Computes out[t, r] for every token t < num_tokens and weight row r in [row_begin, row_end).
// x is [num_tokens, k], w is [*, k] in `w_dtype` (F32, F16 or BF16; rows RowBytes(w_dtype, k)
// apart), out is [num_tokens, out_stride].
using MatMulRowsFn = void (*)(const float* x, int64_t num_tokens, int64_t k, const void* w,
                              DType w_dtype, const float* bias, int64_t row_begin, int64_t row_end,
                              float* out, int64_t out_stride);

// The implementation for `isa`, which must be supported (IsaSupported).
MatMulRowsFn MatMulRowsFor(Isa isa);

// The same for a quantized w (Q8_0, Q4_0, Q4_1) and activations already quantized (x.num_tokens
// tokens, x.k columns).
using QMatMulRowsFn = void (*)(const Q8Activations& x, const void* w, DType w_dtype,
                               const float* bias, int64_t row_begin, int64_t row_end, float* out,
                               int64_t out_stride);

// The implementation for `isa` (supported). The AVX-512 one needs VNNI; on AVX-512 CPUs without it
// this is the AVX2 one (the same bits).
QMatMulRowsFn QMatMulRowsFor(Isa isa);

}  // namespace kvfold::cpu
