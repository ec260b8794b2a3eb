// Activations quantized to Q8 blocks for the integer matmul of quantized weights (qmatmul.h), once
// per MatMul call and for all threads. The one definition, for every ISA: per token row and per
// block of 32 elements,
//   amax = max |x[i]|,  d = amax / 127,  id = d != 0 ? 1 / d : 0,
//   q[i] = round-to-nearest-even(x[i] * id)  (in [-127, 127]),  s = d * float(Σ q[i]),
// each an F32 operation rounded once. A NaN in the block makes d NaN (so the outputs are NaN, as
// in F32), an infinity makes d infinite.
#pragma once

#include <cstdint>
#include <vector>

namespace kvfold::cpu {

struct Q8Activations {
  int64_t num_tokens = 0;
  int64_t k = 0;              // a multiple of 32
  std::vector<int8_t> q;      // [num_tokens, k]
  std::vector<float> scales;  // [num_tokens, k / 32, 2]: {d, s} per block

  const int8_t* Q(int64_t token, int64_t block) const { return &q[token * k + block * 32]; }
  const float* Scales(int64_t token, int64_t block) const {
    return &scales[2 * (token * (k / 32) + block)];
  }
};

// Quantizes x [num_tokens, k] (k % 32 == 0) into *out, reusing its storage.
void QuantizeActivations(const float* x, int64_t num_tokens, int64_t k, Q8Activations* out);

}  // namespace kvfold::cpu
