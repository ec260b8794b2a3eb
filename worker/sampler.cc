#include "worker/sampler.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "glog/logging.h"

namespace kvfold {

float CounterUniform(uint64_t seed, uint64_t counter) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + counter + 0x632be59bd9b4e019ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * 0x1.0p-24f;  // 24 random bits
}

int32_t ArgMax(absl::Span<const float> logits) {
  CHECK(!logits.empty());
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

float LogProbability(absl::Span<const float> logits, int32_t token) {
  CHECK(token >= 0 && static_cast<size_t>(token) < logits.size());
  const float max_logit = logits[ArgMax(logits)];
  double sum = 0.0;
  for (float l : logits) sum += std::exp(static_cast<double>(l - max_logit));
  return static_cast<float>(static_cast<double>(logits[token] - max_logit) - std::log(sum));
}

int32_t Sample(absl::Span<const float> logits, const SamplingParams& params, uint64_t position) {
  if (params.temperature <= 0.0f) return ArgMax(logits);
  const float max_logit = logits[ArgMax(logits)];
  std::vector<float> cumulative(logits.size());
  float total = 0.0f;
  for (size_t i = 0; i < logits.size(); ++i) {
    total += std::exp((logits[i] - max_logit) / params.temperature);
    cumulative[i] = total;
  }
  const float target = CounterUniform(params.seed, position) * total;
  const auto it = std::upper_bound(cumulative.begin(), cumulative.end(), target);
  return static_cast<int32_t>(std::min<size_t>(it - cumulative.begin(), logits.size() - 1));
}

}  // namespace kvfold
