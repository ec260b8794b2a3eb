#include "kernels/cpu/matmul.h"

#include "glog/logging.h"

namespace kvfold::cpu {

// One per matmul_<isa>.cc.
void MatMulRowsGeneric(const float* x, int64_t num_tokens, int64_t k, const void* w, DType w_dtype,
                       const float* bias, int64_t row_begin, int64_t row_end, float* out,
                       int64_t out_stride);
void MatMulRowsAvx2(const float* x, int64_t num_tokens, int64_t k, const void* w, DType w_dtype,
                    const float* bias, int64_t row_begin, int64_t row_end, float* out,
                    int64_t out_stride);
void MatMulRowsAvx512(const float* x, int64_t num_tokens, int64_t k, const void* w, DType w_dtype,
                      const float* bias, int64_t row_begin, int64_t row_end, float* out,
                      int64_t out_stride);

void QMatMulRowsGeneric(const Q8Activations& x, const void* w, DType w_dtype, const float* bias,
                        int64_t row_begin, int64_t row_end, float* out, int64_t out_stride);
void QMatMulRowsAvx2(const Q8Activations& x, const void* w, DType w_dtype, const float* bias,
                     int64_t row_begin, int64_t row_end, float* out, int64_t out_stride);
void QMatMulRowsAvx512(const Q8Activations& x, const void* w, DType w_dtype, const float* bias,
                       int64_t row_begin, int64_t row_end, float* out, int64_t out_stride);

MatMulRowsFn MatMulRowsFor(Isa isa) {
  CHECK(IsaSupported(isa)) << "ISA " << IsaName(isa) << " not supported by this CPU";
  switch (isa) {
    case Isa::kGeneric:
      return &MatMulRowsGeneric;
    case Isa::kAvx2:
      return &MatMulRowsAvx2;
    case Isa::kAvx512:
      return &MatMulRowsAvx512;
  }
  return &MatMulRowsGeneric;
}

QMatMulRowsFn QMatMulRowsFor(Isa isa) {
  CHECK(IsaSupported(isa)) << "ISA " << IsaName(isa) << " not supported by this CPU";
  switch (isa) {
    case Isa::kGeneric:
      return &QMatMulRowsGeneric;
    case Isa::kAvx2:
      return &QMatMulRowsAvx2;
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512vnni") ? &QMatMulRowsAvx512 : &QMatMulRowsAvx2;
  }
  return &QMatMulRowsGeneric;
}

}  // namespace kvfold::cpu
