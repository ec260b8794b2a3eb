#include "worker/rope.h"

#include <cmath>

namespace kvfold {
namespace {

// Llama 3.1's frequency-dependent scaling: long wavelengths are slowed by `factor`, short ones
// kept, and the band between is interpolated.
float Llama3Scale(float inv_freq, const RopeScaling& s) {
  const double old_len = s.original_max_position_embeddings;
  const double low_freq_wavelen = old_len / s.low_freq_factor;
  const double high_freq_wavelen = old_len / s.high_freq_factor;
  const double wavelen = 2 * M_PI / inv_freq;
  if (wavelen < high_freq_wavelen) return inv_freq;
  if (wavelen > low_freq_wavelen) return static_cast<float>(inv_freq / s.factor);
  const double smooth =
      (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  return static_cast<float>((1 - smooth) * inv_freq / s.factor + smooth * inv_freq);
}

}  // namespace

std::vector<float> RopeInverseFrequencies(const ModelConfig& config) {
  const int d = config.head_dim;
  std::vector<float> inv(d / 2);
  for (int i = 0; i < d / 2; ++i) {
    // Float32 like the reference, which computes base ** (2i / d) in float32.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(d);
    float f = 1.0f / std::pow(static_cast<float>(config.rope_theta), exponent);
    switch (config.rope_scaling.type) {
      case RopeScaling::Type::kNone:
        break;
      case RopeScaling::Type::kLinear:
        f = static_cast<float>(f / config.rope_scaling.factor);
        break;
      case RopeScaling::Type::kLlama3:
        f = Llama3Scale(f, config.rope_scaling);
        break;
    }
    if (!config.rope_scaling.freq_factors.empty()) f /= config.rope_scaling.freq_factors[i];
    inv[i] = f;
  }
  return inv;
}

std::vector<float> RopeCosSinTable(const ModelConfig& config, int num_positions) {
  const int d = config.head_dim, half = d / 2;
  const std::vector<float> inv = RopeInverseFrequencies(config);
  std::vector<float> table(static_cast<size_t>(num_positions) * d);
  for (int p = 0; p < num_positions; ++p) {
    float* row = table.data() + static_cast<size_t>(p) * d;
    for (int i = 0; i < half; ++i) {
      const float angle = inv[i] * static_cast<float>(p);  // one float32 product, as in HF
      row[i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      row[half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
  return table;
}

}  // namespace kvfold
