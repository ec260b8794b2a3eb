// The portable quantized matmul: integer lane partials in plain loops, one block per step.
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
    int q[32];  // w_q: signed integer weights
    float d, m;
  };
  struct X {
    const int8_t* q;
    float d, s;
  };

  static Acc Zero() { return Acc{}; }

  template <class F, int kCount>
  static W LoadW(const uint8_t* block) {
    W w;
    w.d = F16ToF32(LoadU16(block));
    w.m = F::kMin ? F16ToF32(LoadU16(block + 2)) : 0.0f;
    const uint8_t* qs = block + F::kQs;
    for (int i = 0; i < 32; ++i) {
      if constexpr (F::kOffset == 128) {
        w.q[i] = static_cast<int8_t>(qs[i]);
      } else {
        w.q[i] = (i < 16 ? qs[i] & 15 : qs[i - 16] >> 4) - F::kOffset;
      }
    }
    return w;
  }

  template <class F, int kCount>
  static X LoadX(const Q8Activations& x, int64_t t, int64_t b) {
    const float* sc = x.Scales(t, b);
    return {x.Q(t, b), sc[0], sc[1]};
  }

  template <class F, int kCount>
  static void Step(const W& w, const X& x, int64_t b, Acc& acc) {
    const float dd = w.d * x.d;
    float* lanes = acc.v + 8 * (b % 2);
    for (int l = 0; l < 8; ++l) {
      int p = 0;
      for (int i = 4 * l; i < 4 * l + 4; ++i) p += w.q[i] * x.q[i];
      lanes[l] += static_cast<float>(p) * dd;
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
