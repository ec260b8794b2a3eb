// What `kvfold calibrate` measures about each attention layer of the unfolded model, from host
// copies of one sequence's activations (ATTENTION.md "Calibration"): attention-layer importance,
// cross-layer similarity of attention probabilities, and CHAI's per-head score features.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace kvfold {

// Causal softmax(q·kᵀ·scale) of one sequence: q [T, num_heads * head_dim], k [T, num_kv_heads *
// head_dim] (after RoPE), GQA grouping. Returns [num_heads][T][T], zero above the diagonal.
std::vector<float> CausalAttentionProbs(absl::Span<const float> q, absl::Span<const float> k,
                                        int tokens, int num_heads, int num_kv_heads, int head_dim,
                                        float scale);

// sim[i * H + j]: mean over query rows t >= 1 of cos(P_a[i][t], P_b[j][t]) (row 0 is always [1]).
std::vector<double> ProbabilitySimilarity(absl::Span<const float> probs_a,
                                          absl::Span<const float> probs_b, int tokens,
                                          int num_heads);

// CHAI's score feature of each KV head (its whole GQA group): the probability rows of the first
// `window` tokens over the first `window` tokens, for each query head of the group, concatenated.
// Returns [num_kv_heads][group * window * window]; requires tokens >= window.
std::vector<float> ChaiFeatures(absl::Span<const float> probs, int tokens, int num_heads,
                                int num_kv_heads, int window);

// A running mean of cos(x, x + a) over tokens: how little the attention sublayer output `a`
// turns the residual stream `x` (close to 1: the layer matters little; "What Matters in
// Transformers?", arXiv 2406.15786).
class DropScore {
 public:
  void Add(absl::Span<const float> x, absl::Span<const float> a, int hidden);
  double mean() const { return count_ ? sum_ / count_ : 0.0; }
  int64_t count() const { return count_; }

 private:
  double sum_ = 0.0;
  int64_t count_ = 0;
};

}  // namespace kvfold
