#include "worker/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/container/flat_hash_map.h"
#include "glog/logging.h"

namespace kvfold {
namespace {

// Ids ordered by (value descending, id ascending): a deterministic order for ties. Keeps the
// first `keep`.
template <typename T>
void OrderByValue(absl::Span<const T> values, size_t keep, std::vector<int32_t>& ids) {
  auto before = [&](int32_t a, int32_t b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  };
  keep = std::min(keep, ids.size());
  std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), before);
  ids.resize(keep);
}

std::vector<int32_t> TopIds(absl::Span<const float> values, size_t keep) {
  std::vector<int32_t> ids(values.size());
  std::iota(ids.begin(), ids.end(), 0);
  OrderByValue(values, keep, ids);
  return ids;
}

double LogSumExp(absl::Span<const float> logits, float max_logit) {
  double sum = 0.0;
  for (float l : logits) sum += std::exp(static_cast<double>(l - max_logit));
  return std::log(sum);
}

// Zeroes every probability outside the smallest most-likely prefix with mass >= top_p.
void KeepTopP(std::vector<double>& probs, float top_p) {
  std::vector<int32_t> order;  // the candidates left by top_k
  double total = 0.0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0.0) continue;
    order.push_back(static_cast<int32_t>(i));
    total += probs[i];
  }
  OrderByValue(absl::Span<const double>(probs), order.size(), order);
  double mass = 0.0;
  size_t kept = 0;
  while (kept < order.size()) {
    mass += probs[order[kept++]];
    if (mass >= top_p * total) break;
  }
  for (size_t i = kept; i < order.size(); ++i) probs[order[i]] = 0.0;
}

}  // namespace

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
  return static_cast<float>(static_cast<double>(logits[token] - max_logit) -
                            LogSumExp(logits, max_logit));
}

std::vector<std::pair<int32_t, float>> TopLogprobs(absl::Span<const float> logits, int32_t k) {
  std::vector<std::pair<int32_t, float>> top;
  if (k <= 0 || logits.empty()) return top;
  const float max_logit = logits[ArgMax(logits)];
  const double log_sum = LogSumExp(logits, max_logit);
  for (int32_t id : TopIds(logits, static_cast<size_t>(k))) {
    top.emplace_back(id, static_cast<float>(static_cast<double>(logits[id] - max_logit) - log_sum));
  }
  return top;
}

TokenLogprob ScoreToken(absl::Span<const float> logits, int32_t token, int32_t k) {
  TokenLogprob score;
  score.token_id = token;
  score.logprob = LogProbability(logits, token);
  const float value = logits[token];
  score.rank = static_cast<int32_t>(
      std::count_if(logits.begin(), logits.end(), [&](float l) { return l >= value; }));
  score.top = TopLogprobs(logits, k);
  return score;
}

void ApplyBiasAndPenalties(const SamplingParams& params, const TokenHistory& history,
                           absl::Span<float> logits) {
  const auto vocab = static_cast<int32_t>(logits.size());
  for (const auto& [token, bias] : params.logit_bias) {
    if (token >= 0 && token < vocab) logits[token] += bias;
  }
  if (params.repetition_penalty != 1.0f) {
    std::vector<bool> seen(logits.size(), false);
    for (absl::Span<const int32_t> part : {history.prompt, history.output}) {
      for (int32_t t : part) {
        if (t < 0 || t >= vocab || seen[t]) continue;
        seen[t] = true;
        float& l = logits[t];
        l = l > 0 ? l / params.repetition_penalty : l * params.repetition_penalty;
      }
    }
  }
  if (params.frequency_penalty != 0.0f || params.presence_penalty != 0.0f) {
    absl::flat_hash_map<int32_t, int32_t> counts;
    for (int32_t t : history.output) {
      if (t >= 0 && t < vocab) ++counts[t];
    }
    for (const auto& [t, count] : counts) {
      logits[t] -= params.frequency_penalty * static_cast<float>(count) + params.presence_penalty;
    }
  }
}

std::vector<double> FilteredProbabilities(absl::Span<const float> logits,
                                          const SamplingParams& params) {
  CHECK_GT(params.temperature, 0.0f);
  const float max_logit = logits[ArgMax(logits)];
  std::vector<double> probs(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    probs[i] = std::exp(static_cast<double>(logits[i] - max_logit) / params.temperature);
  }
  if (params.top_k > 0 && static_cast<size_t>(params.top_k) < logits.size()) {
    std::vector<bool> keep(logits.size(), false);
    for (int32_t id : TopIds(logits, static_cast<size_t>(params.top_k))) keep[id] = true;
    for (size_t i = 0; i < probs.size(); ++i) {
      if (!keep[i]) probs[i] = 0.0;
    }
  }
  if (params.top_p < 1.0f) {
    KeepTopP(probs, params.top_p);
  }
  if (params.min_p > 0.0f) {
    const double threshold = params.min_p * *std::max_element(probs.begin(), probs.end());
    for (double& p : probs) {
      if (p < threshold) p = 0.0;
    }
  }
  const double total = std::accumulate(probs.begin(), probs.end(), 0.0);
  for (double& p : probs) p /= total;
  return probs;
}

int32_t Sample(absl::Span<const float> logits, const SamplingParams& params, uint64_t position,
               const TokenHistory& history) {
  absl::Span<const float> processed = logits;
  std::vector<float> adjusted;
  if (!params.logit_bias.empty() || params.NeedsHistory()) {
    adjusted.assign(logits.begin(), logits.end());
    ApplyBiasAndPenalties(params, history, absl::MakeSpan(adjusted));
    processed = adjusted;
  }
  if (params.temperature <= 0.0f) return ArgMax(processed);
  const std::vector<double> probs = FilteredProbabilities(processed, params);
  const double target = CounterUniform(params.seed, position);
  double cumulative = 0.0;
  int32_t last_kept = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0.0) continue;
    cumulative += probs[i];
    last_kept = static_cast<int32_t>(i);
    if (target < cumulative) return last_kept;
  }
  return last_kept;  // rounding left target just above the total
}

}  // namespace kvfold
