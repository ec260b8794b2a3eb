// The portable matmul path: plain loops over 16 lanes that the compiler may vectorise for the
// baseline ISA (it may not reassociate them, so the order is ops.h's).
#include <cstdint>

#include "kernels/cpu/numerics.h"
#include "kernels/cpu/quant.h"

namespace kvfold::cpu {
namespace {

struct V {
  static constexpr int kRows = 2;
  static constexpr int kTokens = 2;
  float v[16];

  static V Zero() { return Broadcast(0.0f); }
  static V Broadcast(float f) {
    V r;
    for (float& e : r.v) e = f;
    return r;
  }
  static V Load(const float* p) {
    V r;
    for (int j = 0; j < 16; ++j) r.v[j] = p[j];
    return r;
  }
  static V LoadBf16(const uint16_t* p) {
    V r;
    for (int j = 0; j < 16; ++j) r.v[j] = Bf16ToF32(p[j]);
    return r;
  }
  static V LoadF16(const uint16_t* p) {
    V r;
    for (int j = 0; j < 16; ++j) r.v[j] = F16ToF32(p[j]);
    return r;
  }
  static V Add(const V& a, const V& b) {
    V r;
    for (int j = 0; j < 16; ++j) r.v[j] = a.v[j] + b.v[j];
    return r;
  }
  static V Mul(const V& a, const V& b) {
    V r;
    for (int j = 0; j < 16; ++j) r.v[j] = a.v[j] * b.v[j];
    return r;
  }
  static float Reduce(V a) {
    for (int width = 8; width >= 1; width /= 2) {
      for (int j = 0; j < width; ++j) a.v[j] += a.v[j + width];
    }
    return a.v[0];
  }
};

#include "kernels/cpu/matmul_kernel.inc"

}  // namespace

void MatMulRowsGeneric(const float* x, int64_t num_tokens, int64_t k, const void* w, DType w_dtype,
                       const float* bias, int64_t row_begin, int64_t row_end, float* out,
                       int64_t out_stride) {
  MatMulRowsIsa(x, num_tokens, k, w, w_dtype, bias, row_begin, row_end, out, out_stride);
}

}  // namespace kvfold::cpu
