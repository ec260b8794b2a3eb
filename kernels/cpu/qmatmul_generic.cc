// The portable quantized matmul: one block per step, in plain loops the compiler vectorises for
// the baseline ISA. The integers are held as floats: every product (<= 128 · 127) and lane
// partial (<= 4 · 128 · 127) is exact in F32, so p is the same integer, and SSE2 has float
// multiplies where it lacks 32-bit integer ones.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "glog/logging.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/numerics.h"
#include "kernels/cpu/quant.h"

namespace kvfold::cpu {
namespace {

struct Q {
  static constexpr int kStep = 1;
  static constexpr int kRows = 2;
  static constexpr int kTokens = 2;
  struct Acc {
    float v[16];
    float mins[2];  // even, odd blocks
  };
  struct W {
    float q[32];  // w_q
    float d, m;
  };
  struct X {
    float q[32];  // x_q
    float d, s;
  };

  static Acc Zero() { return Acc{}; }

  template <class F, int kCount>
  static W LoadW(const uint8_t* block) {
    W w;
    w.d = F16ToF32(LoadU16(block));
    w.m = F::kMin ? F16ToF32(LoadU16(block + 2)) : 0.0f;
    const uint8_t* qs = block + F::kQs;
    if constexpr (F::kOffset == 128) {
      for (int i = 0; i < 32; ++i) w.q[i] = static_cast<float>(static_cast<int8_t>(qs[i]));
    } else {
      for (int i = 0; i < 16; ++i) {
        w.q[i] = static_cast<float>((qs[i] & 15) - F::kOffset);
        w.q[i + 16] = static_cast<float>((qs[i] >> 4) - F::kOffset);
      }
    }
    return w;
  }

  template <class F, int kCount>
  static X LoadX(const Q8Activations& x, int64_t t, int64_t b) {
    X out;
    const int8_t* q = x.Q(t, b);
    for (int i = 0; i < 32; ++i) out.q[i] = static_cast<float>(q[i]);
    out.d = x.Scales(t, b)[0];
    out.s = x.Scales(t, b)[1];
    return out;
  }

  template <class F, int kCount>
  static void Step(const W& w, const X& x, int64_t b, Acc& acc) {
    const float dd = w.d * x.d;
    float prod[32];
    for (int i = 0; i < 32; ++i) prod[i] = w.q[i] * x.q[i];
    float* lanes = acc.v + 8 * (b % 2);
    for (int l = 0; l < 8; ++l) {
      const float p = (prod[4 * l] + prod[4 * l + 1]) + (prod[4 * l + 2] + prod[4 * l + 3]);
      lanes[l] += p * dd;
    }
    if constexpr (F::kMin) acc.mins[b % 2] += w.m * x.s;
  }

  template <class F>
  static float Finish(Acc a) {
    for (int width = 8; width >= 1; width /= 2) {
      for (int j = 0; j < width; ++j) a.v[j] += a.v[j + width];
    }
    return F::kMin ? a.v[0] + (a.mins[0] + a.mins[1]) : a.v[0];
  }
};

#include "kernels/cpu/qmatmul_kernel.inc"

}  // namespace

void QMatMulRowsGeneric(const Q8Activations& x, const void* w, DType w_dtype, const float* bias,
                        int64_t row_begin, int64_t row_end, float* out, int64_t out_stride) {
  QMatMulRowsIsa(x, w, w_dtype, bias, row_begin, row_end, out, out_stride);
}

}  // namespace kvfold::cpu
