#include "kernels/cpu/quantize_activations.h"

#include <limits>

#include "glog/logging.h"
#include "kernels/cpu/numerics.h"

namespace kvfold::cpu {
namespace {

// One block of 32 (see the header). The maximum runs over 8 lanes (max is exact, so the order is
// free) and rounding to nearest-even uses the 1.5 · 2^23 trick (exact for |v| <= 2^22, independent
// of the FP environment): both vectorise.
__attribute__((always_inline)) inline void QuantizeBlock(const float* x, int8_t* q, float* scales) {
  float lane_max[8] = {};
  bool nan = false;
  for (int i = 0; i < 32; i += 8) {
    for (int j = 0; j < 8; ++j) {
      const float a = x[i + j] < 0.0f ? -x[i + j] : x[i + j];
      lane_max[j] = a > lane_max[j] ? a : lane_max[j];
      nan |= a != a;
    }
  }
  float amax = 0.0f;
  for (float m : lane_max) amax = m > amax ? m : amax;
  const float d = nan ? std::numeric_limits<float>::quiet_NaN() : amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  constexpr float kRound = 12582912.0f;  // 1.5 · 2^23
  int sum = 0;
  for (int i = 0; i < 32; ++i) {
    float r = (x[i] * id + kRound) - kRound;
    r = r > 127.0f ? 127.0f : r;     // only reached through infinities
    r = r >= -127.0f ? r : -127.0f;  // and NaN (id is 0 or NaN there: d carries it)
    q[i] = static_cast<int8_t>(static_cast<int>(r));
    sum += q[i];
  }
  scales[0] = d;
  scales[1] = d * static_cast<float>(sum);
}

}  // namespace

KVFOLD_ISA_CLONES void QuantizeActivations(const float* x, int64_t num_tokens, int64_t k,
                                           Q8Activations* out) {
  CHECK_EQ(k % 32, 0) << "QuantizeActivations: k = " << k;
  out->num_tokens = num_tokens;
  out->k = k;
  out->q.resize(num_tokens * k);
  out->scales.resize(num_tokens * (k / 32) * 2);
  for (int64_t b = 0; b < num_tokens * (k / 32); ++b) {
    QuantizeBlock(x + b * 32, &out->q[b * 32], &out->scales[2 * b]);
  }
}

}  // namespace kvfold::cpu
